"""Toxicity: ``alt-profanity-check``'s linear model plus rules for threats, self-harm incitement and dehumanising.

Why this combination: it is the best option that runs offline here. detoxify and the HF classifiers need weights
from a model hub; ``alt-profanity-check`` ships a word-level linear SVM (trained on labelled toxic comments) that is
good at insults and slurs but scores "I know where you live" or "I will find you and hurt you" below 0.5, because
no single word is offensive. The rules cover exactly that gap, and each rule names its category in the reasons.
The figures on a small labelled sample are in the README (the sample is ours; see the benchmark).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_PRONOUN = r"(you|u|ya|your (family|kids|wife|husband|mother|mom|house)|him|her|them)"
_I_WILL = (
    r"\b(i|we)\s*('ll|'m going to|'m gonna|will|shall|am going to|am gonna|are going to|are gonna|gonna|"
    r"'re going to|'re gonna|want to|wanna|am about to|can't wait to)\b"
)
_HARM = (
    r"(kill|murder|hurt|stab|shoot|beat|strangle|choke|rape|slaughter|burn|bury|cut|smash|break|butcher|"
    r"execute|torture|end|destroy|find|hunt|punch|kick|poison|maim)\w*"
)

TOXIC_RULES: Final[tuple[tuple[str, re.Pattern[str], float], ...]] = (
    ("threat", re.compile(rf"{_I_WILL}[^.!?\n]{{0,30}}\b{_HARM}\b[^.!?\n]{{0,25}}\b{_PRONOUN}\b", re.I), 0.9),
    ("threat", re.compile(r"\b(i|we) know where (you|u) live\b|\bwatch your back\b|\byou('re| are) (dead|next)\b"
                          r"|\byour days are numbered\b|\bsleep with one eye open\b", re.I), 0.9),
    ("threat", re.compile(r"\b(bomb|blow up|shoot up|burn down|attack)\s+(the|your|a|this|that)\s+(school|office|"
                          r"building|church|mosque|synagogue|temple|house|home|workplace|hospital)\b", re.I), 0.85),
    ("self_harm_incitement", re.compile(r"\b(kill|hang|shoot|end)\s+(yourself|urself|your\s*self)\b|\bkys\b"
                                        r"|\b(go|just|should|better)\s+(go\s+)?die\b|\bhope (you|u) (die|get "
                                        r"(cancer|killed|hit|shot|raped))|\b(you|u) (should|deserve to|ought to) "
                                        r"(die|be (killed|shot|hanged|raped))\b|\bnobody would miss you\b", re.I), 0.9),
    ("dehumanizing", re.compile(r"\b(are|is|they're|they are)\s+(just\s+)?(animals|vermin|parasites|subhuman|"
                                r"cockroaches|rats|savages|a plague|a disease)\b[^.!?\n]{0,40}"
                                r"|\bshould (all )?be (exterminated|wiped out|gassed|eradicated|deported and shot)\b",
                                re.I), 0.75),
    ("harassment", re.compile(r"\b(you|u)('re| are)\s+(so\s+|such\s+(a|an)\s+)?(worthless|pathetic|disgusting|"
                              r"useless|subhuman|a waste of (space|oxygen)|trash|garbage|scum)\b", re.I), 0.7),
)  # fmt: skip


# Technical idioms the word model over-scores ("kill a child process" ~0.52): reworded before the model only.
_TECH_IDIOMS: Final = (
    (re.compile(r"\b(kill|killing|killed|kills)\b(?=(\s+\w+){0,3}\s+(process(es)?|pids?|threads?|jobs?|tasks?|"
                r"sessions?|servers?|containers?|pods?|commands?|programs?|apps?|query|queries|connections?|"
                r"signals?|switch|workers?|daemons?|-9)\b)", re.I), "stop"),
    (re.compile(r"\bchild (process(es)?|nodes?|elements?|widgets?|threads?)\b", re.I), r"sub\1"),
    (re.compile(r"\b(sigkill|oomkill(ed)?|pkill|killall)\b", re.I), "signal"),
)  # fmt: skip


def neutralize_idioms(text: str) -> str:
    for pattern, repl in _TECH_IDIOMS:
        text = pattern.sub(repl, text)
    return text


@dataclass(frozen=True, slots=True)
class ToxicityResult:
    score: float
    model_score: float
    reasons: list[str]


Predictor = Callable[[list[str]], list[float]]


def _load_profanity_model() -> Predictor:
    """Load the joblib'd vectorizer + model shipped in alt-profanity-check (a trusted PyPI package)."""
    with warnings.catch_warnings():
        # Pickled with an older scikit-learn; the linear model loads and predicts the same.
        warnings.simplefilter("ignore")
        import profanity_check  # type: ignore[import-untyped]

    def predict(texts: list[str]) -> list[float]:
        return [float(p) for p in profanity_check.predict_prob(texts)]

    return predict


class ToxicityScorer:
    """Score = max(linear model probability, strongest rule)."""

    def __init__(self, predictor: Predictor | None = None) -> None:
        self._predict = predictor

    def _predictor(self) -> Predictor:
        if self._predict is None:
            self._predict = _load_profanity_model()
        return self._predict

    def check(self, text: str) -> ToxicityResult:
        if not text.strip():
            return ToxicityResult(0.0, 0.0, [])
        model_score = self._predictor()([neutralize_idioms(text)])[0]
        reasons: list[str] = []
        rule_score = 0.0
        for name, pattern, score in TOXIC_RULES:
            if pattern.search(text):
                if f"rule:{name}" not in reasons:
                    reasons.append(f"rule:{name}")
                rule_score = max(rule_score, score)
        if model_score >= 0.5:
            reasons.append(f"model:{model_score:.2f}")
        return ToxicityResult(max(model_score, rule_score), model_score, reasons)


_lock = threading.Lock()
_scorer: ToxicityScorer | None = None


def get_toxicity_scorer() -> ToxicityScorer:
    global _scorer
    if _scorer is None:
        with _lock:
            if _scorer is None:
                scorer = ToxicityScorer()
                scorer.check("warm up")  # load the model under the lock, once per process
                _scorer = scorer
    return _scorer
