"""Model router: send each question to the small or the large generation model.

The large model costs several times more per token, so the default is small and a question earns the large model
only when there is evidence it needs it. Two routers share one interface and the per-tenant override:

* :class:`HeuristicRouter`, the seed's rule: a long question or a "hard" keyword ("compare", "explain why",
  "difference", "step by step", ...) goes large. It looks only at the question, so it pays for long-but-simple
  questions and misses hard ones phrased briefly: a pasted error, three questions in one, or evidence scattered
  over several documents.
* :class:`FeatureRouter`: a weighted sum of six features in [0, 1], each a reason that shows in the decision.
  The weights encode what makes a small model fail on RAG: combining evidence (comparison, several sub-questions,
  sources spread over distinct documents), diagnosing (error messages, tracebacks) and coping with weak retrieval.
  Length alone only nudges. One strong cue (a comparison) is enough on its own; a weak one (a "why", a long
  question, one error name) needs a second. See :class:`FeatureWeights` for the numbers and why.

Per-tenant overrides pin a tier whatever the score (``Settings.router_overrides``, parsed only here by
:func:`parse_router_overrides`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import msgspec

from schemas.events import Passage

Tier = Literal["small", "large"]
TIERS: tuple[Tier, ...] = ("small", "large")

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: model-independent, and close enough to BPE counts for routing thresholds."""
    return len(_TOKEN.findall(text))


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    tier: Tier
    score: float
    reasons: tuple[str, ...] = ()
    router: str = ""


def parse_router_overrides(text: str) -> dict[str, Tier]:
    """``"acme:large,free:small"`` -> ``{"acme": "large", "free": "small"}``; ``*`` matches every other tenant."""
    overrides: dict[str, Tier] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        tenant, sep, tier = item.rpartition(":")
        tenant, tier = tenant.strip(), tier.strip().lower()
        if not sep or not tenant or tier not in TIERS:
            raise ValueError(f"router_overrides: {item!r} is not tenant:small or tenant:large")
        if tenant in overrides:
            raise ValueError(f"router_overrides: tenant {tenant!r} is listed twice")
        overrides[tenant] = tier
    return overrides


@dataclass(frozen=True)
class RouterConfig:
    small_model: str = "llm_small"
    large_model: str = "llm_large"
    overrides: Mapping[str, Tier] = field(default_factory=dict)

    def model_for(self, tier: Tier) -> str:
        return self.large_model if tier == "large" else self.small_model

    def override_for(self, tenant: str) -> Tier | None:
        return self.overrides.get(tenant, self.overrides.get("*"))


class Router(ABC):
    """Scores a question in [0, 1]; at or above ``threshold`` it goes large, unless the tenant is pinned."""

    name: ClassVar[str]
    threshold: float = 0.5

    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()

    @abstractmethod
    def score(self, question: str, passages: Sequence[Passage]) -> tuple[float, list[str]]:
        """``(score, reasons)``; reasons name every feature that contributed."""

    def route(self, question: str, passages: Sequence[Passage], tenant: str) -> RouteDecision:
        score, reasons = self.score(question, passages)
        tier: Tier = "large" if score >= self.threshold else "small"
        pinned = self.config.override_for(tenant)
        if pinned is not None:
            reasons.append(f"tenant override {tenant}:{pinned} (scored {tier})")
            tier = pinned
        return RouteDecision(
            model=self.config.model_for(tier),
            tier=tier,
            score=round(score, 3),
            reasons=tuple(reasons),
            router=self.name,
        )


class HeuristicRouter(Router):
    """The seed's rule: long, or containing a "hard" keyword, means large."""

    name = "heuristic"
    threshold = 1.0
    KEYWORDS: ClassVar[tuple[str, ...]] = (
        "compare",
        "explain why",
        "difference",
        "step by step",
        "analyze",
        "analyse",
        "pros and cons",
        "versus",
    )
    MAX_SMALL_WORDS: ClassVar[int] = 25

    def score(self, question: str, passages: Sequence[Passage]) -> tuple[float, list[str]]:
        lowered = question.lower()
        reasons = [f"keyword {k!r}" for k in self.KEYWORDS if k in lowered]
        words = len(question.split())
        if words > self.MAX_SMALL_WORDS:
            reasons.append(f"{words} words > {self.MAX_SMALL_WORDS}")
        return (1.0 if reasons else 0.0), reasons


@dataclass(frozen=True)
class FeatureWeights:
    """Weights and ramps of :class:`FeatureRouter`; the threshold is 0.45.

    - ``comparison`` 0.45: comparing needs facts from two places put side by side, where small models drop one
      side; alone it reaches the threshold. A "why"/"explain" cue counts half (0.225): a rationale is often one
      paragraph a small model can restate, so it needs another signal.
    - ``error`` 0.35: an exception name or traceback means diagnosis, not lookup; a bare error name with a short
      question stays small (the fix is usually quoted verbatim), an error plus any other cue goes large.
    - ``parts`` 0.25: each extra sub-question (second "?", "and why/how ...") is another answer to get right;
      saturates at 3 parts.
    - ``spread`` 0.25: strong evidence (score >= 80% of the best) in 3+ distinct documents needs synthesis;
      with any weak cue it reaches the threshold.
    - ``weak_retrieval`` 0.20: a best passage below 0.5 on the reranker's [0, 1] scale (saturating at 0.2) leaves
      partial evidence, where small models hallucinate more; the refusal path handles "nothing relevant".
    - ``length`` 0.20: 15 tokens -> 0, 45 tokens -> full; long questions carry constraints, but length alone is
      the seed's main false positive, so it cannot decide on its own.
    """

    comparison: float = 0.45
    error: float = 0.35
    parts: float = 0.25
    spread: float = 0.25
    weak_retrieval: float = 0.20
    length: float = 0.20
    reasoning_fraction: float = 0.5
    length_ramp: tuple[int, int] = (15, 45)
    relevance_ramp: tuple[float, float] = (0.5, 0.2)
    spread_top_k: int = 5
    spread_ratio: float = 0.8


_COMPARISON = re.compile(
    r"\b(compare[ds]?|comparing|comparison|versus|vs\.?|differences?|differ|better than|faster than|slower than|"
    r"pros and cons|trade-?offs?|(dis)?advantages?|similarit(y|ies)|which (one |is )?(is )?(better|faster|best))\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"\b(why|explain|reasons?|rationale|step by step|walk me through|implications?|consequences?|when should)\b",
    re.IGNORECASE,
)
_ERROR = re.compile(
    r"Traceback \(most recent call last\)|\b[A-Z]\w*(Error|Exception)\b|\bsegfault|\bcore dumped|"
    r"\bstack ?trace|\bexit (code|status) \d|```|^\s*>>> |^\s{4,}\S|\berrno\b",
    re.MULTILINE,
)
_EXTRA_ASK = re.compile(
    r"(?:,|;|\band|\balso|\bthen)\s+(?:also\s+)?(how|why|what|when|which|where|whether|can|should|is|does|do)"
    r"\s+\w+",
    re.IGNORECASE,
)


def _ramp(value: float, zero_at: float, full_at: float) -> float:
    """0 at ``zero_at``, 1 at ``full_at`` (either direction), linear between, clamped."""
    if zero_at == full_at:
        return 1.0 if value >= full_at else 0.0
    return min(1.0, max(0.0, (value - zero_at) / (full_at - zero_at)))


class FeatureRouter(Router):
    """Interpretable weighted features of the question and of the retrieved evidence (see :class:`FeatureWeights`)."""

    name = "feature"
    threshold = 0.45

    def __init__(self, config: RouterConfig | None = None, weights: FeatureWeights | None = None) -> None:
        super().__init__(config)
        self.weights = weights or FeatureWeights()

    def features(self, question: str, passages: Sequence[Passage]) -> dict[str, tuple[float, str]]:
        """Each feature's value in [0, 1] with a short explanation."""
        w = self.weights
        out: dict[str, tuple[float, str]] = {}
        tokens = count_tokens(question)
        out["length"] = (_ramp(tokens, *w.length_ramp), f"{tokens} tokens")

        comparison = _COMPARISON.search(question)
        reasoning = _REASONING.search(question)
        if comparison:
            out["comparison"] = (1.0, f"comparison cue {comparison.group(0).lower()!r}")
        elif reasoning:
            out["comparison"] = (w.reasoning_fraction, f"reasoning cue {reasoning.group(0).lower()!r}")
        else:
            out["comparison"] = (0.0, "no comparison or reasoning cue")

        error = _ERROR.search(question)
        out["error"] = (1.0, f"error/code {error.group(0).strip()[:30]!r}") if error else (0.0, "no error or code")

        parts = max(1, question.count("?")) + len(_EXTRA_ASK.findall(question))
        out["parts"] = (_ramp(parts, 1, 3), f"{parts} sub-question(s)")

        top = sorted(passages, key=lambda p: p.score, reverse=True)[: w.spread_top_k]
        if top:
            best = top[0].score
            strong = {p.doc_id for p in top if best > 0 and p.score >= w.spread_ratio * best}
            out["spread"] = (_ramp(len(strong), 1, 3), f"strong evidence in {len(strong)} document(s)")
            out["weak_retrieval"] = (_ramp(best, *w.relevance_ramp), f"best passage score {best:.2f}")
        else:
            out["spread"] = (0.0, "no passages")
            out["weak_retrieval"] = (0.0, "no passages")
        return out

    def score(self, question: str, passages: Sequence[Passage]) -> tuple[float, list[str]]:
        weights = {
            "length": self.weights.length,
            "comparison": self.weights.comparison,
            "error": self.weights.error,
            "parts": self.weights.parts,
            "spread": self.weights.spread,
            "weak_retrieval": self.weights.weak_retrieval,
        }
        total = 0.0
        reasons = []
        for name, (value, why) in self.features(question, passages).items():
            contribution = weights[name] * value
            total += contribution
            if contribution > 0:
                reasons.append(f"{why} (+{contribution:.2f})")
        return min(total, 1.0), reasons


ROUTERS: dict[str, type[Router]] = {"feature": FeatureRouter, "heuristic": HeuristicRouter}


def build_router(name: str, config: RouterConfig) -> Router:
    """The router called ``name``, with its models and tenant overrides; a bad name fails here, at start-up."""
    try:
        router_type = ROUTERS[name]
    except KeyError:
        raise ValueError(f"router must be one of {sorted(ROUTERS)}, not {name!r}") from None
    return router_type(config)


class RoutedChooser:
    """A :class:`~processors.protocols.ModelChooser`: the client's explicit model if it named one, else the
    router's choice."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def choose(self, question: str, passages: Sequence[Passage], tenant: str, requested: str | None) -> str:
        return requested or self.router.route(question, passages, tenant).model
