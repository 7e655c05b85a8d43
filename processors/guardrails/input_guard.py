"""Input guard: screens a question before retrieval and produces the :class:`GuardVerdict` put on the event.

Order matters for cost and safety:
1. size limits on the raw string (O(1)): a 10 MB paste is rejected before anything reads it;
2. binary garbage and token limit on the raw text (one pass, no model);
3. Unicode normalisation, so zero-width or full-width tricks cannot slip past the checks below;
4. PII, injection and toxicity in one worker thread, so the event loop keeps serving other queries.

The text returned is always the normalised, *masked* text: it is what later stages, logs and dead letters see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from processors.guardrails.injection import InjectionDetector, get_injection_detector
from processors.guardrails.pii import MaskResult, PiiAnalyzer, PiiEntity, apply_masks, get_pii_analyzer
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.textnorm import estimate_tokens, garbage_ratio, normalize
from processors.guardrails.toxicity import ToxicityScorer, get_toxicity_scorer
from schemas.events import GuardVerdict


@dataclass(frozen=True, slots=True)
class InputGuardResult:
    """Verdict plus the text later stages may see (normalised and masked; empty when rejected unread)."""

    verdict: GuardVerdict
    text: str
    entities: list[PiiEntity] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.verdict.action == "block"


@dataclass(frozen=True, slots=True)
class _Scan:
    masked: MaskResult
    injection_score: float
    injection_reasons: list[str]
    toxicity_score: float
    toxicity_reasons: list[str]
    timings_ms: dict[str, float]


def _reject(reason: str, started: float, **scores: float) -> InputGuardResult:
    return InputGuardResult(
        GuardVerdict(action="block", reasons=[reason], scores=scores),
        text="",
        timings_ms={"input_guard": (time.perf_counter() - started) * 1000.0},
    )


class InputGuard:
    """Stateless apart from the (per-process, cached) models; safe to share across concurrent queries."""

    def __init__(
        self,
        pii: PiiAnalyzer | None = None,
        injection: InjectionDetector | None = None,
        toxicity: ToxicityScorer | None = None,
    ) -> None:
        self._pii_factory: Callable[[], PiiAnalyzer] = (lambda: pii) if pii else get_pii_analyzer
        self._inj_factory: Callable[[], InjectionDetector] = (
            (lambda: injection) if injection else get_injection_detector
        )
        self._tox_factory: Callable[[], ToxicityScorer] = (lambda: toxicity) if toxicity else get_toxicity_scorer

    async def warm_up(self) -> None:
        """Build the models off the event loop at worker start, not on the first user's query."""
        await asyncio.to_thread(lambda: (self._pii_factory(), self._inj_factory(), self._tox_factory()))

    async def check(self, text: str, policy: GuardPolicy) -> InputGuardResult:
        started = time.perf_counter()
        if len(text) > policy.max_chars:
            return _reject(f"input_too_long:{len(text)}>{policy.max_chars}_chars", started, chars=float(len(text)))
        if "\x00" in text:
            return _reject("binary_input:nul_byte", started, garbage=1.0)
        ratio = garbage_ratio(text)
        if ratio > policy.max_garbage_ratio:
            return _reject(f"binary_input:garbage_ratio={ratio:.2f}", started, garbage=ratio)
        tokens = estimate_tokens(text)
        if tokens > policy.max_tokens:
            return _reject(f"input_too_long:{tokens}>{policy.max_tokens}_tokens", started, tokens=float(tokens))

        norm = normalize(text)
        scan = await asyncio.to_thread(self._scan, norm.text, policy)

        reasons: list[str] = []
        scores: dict[str, float] = {
            "injection": round(scan.injection_score, 4),
            "toxicity": round(scan.toxicity_score, 4),
        }
        if norm.changed:
            reasons.append(f"unicode_normalized:invisible={norm.removed_invisible},homoglyphs={norm.folded_homoglyphs}")
        block = False
        for name, check_action, score, threshold, flag_at, why in (
            ("prompt_injection", policy.injection_action, scan.injection_score, policy.injection_threshold,
             policy.injection_flag_threshold, scan.injection_reasons),
            ("toxicity", policy.toxicity_action, scan.toxicity_score, policy.toxicity_threshold,
             policy.toxicity_flag_threshold, scan.toxicity_reasons),
        ):  # fmt: skip
            if check_action == "off":
                continue
            detail = ";".join(why) or "model"
            if score >= threshold:
                block |= check_action == "block"
                reasons.append(f"{name}:{detail}" if check_action == "block" else f"{name}_flagged:{detail}")
            elif score >= flag_at:
                # flag, don't block: an uncertain score lets the question through and says so on the answer
                reasons.append(f"{name}_flagged:{detail}")

        found = scan.masked.entities
        for etype in sorted({e.entity_type for e in found}):
            of_type = [e for e in found if e.entity_type == etype]
            why_found = ",".join(sorted({e.why for e in of_type}))
            scores[f"pii.{etype}"] = max(e.score for e in of_type)
            if etype in policy.block_entities:
                block = True
                reasons.append(f"pii_blocked:{etype}x{len(of_type)}[{why_found}]")
            elif etype in policy.mask_entities:
                reasons.append(f"pii_masked:{etype}x{len(of_type)}[{why_found}]")
            else:
                reasons.append(f"pii_flagged:{etype}x{len(of_type)}[{why_found}]")
        masked_any = any(e.entity_type in policy.mask_entities or e.entity_type in policy.block_entities for e in found)
        # NFKC alone ("…" -> "...") is not worth a "modify"; removed invisibles or folded look-alikes are.
        changed = masked_any or norm.removed_invisible > 0 or norm.folded_homoglyphs > 0
        action: Literal["allow", "modify", "block"] = "block" if block else ("modify" if changed else "allow")
        timings = dict(scan.timings_ms)
        timings["input_guard"] = (time.perf_counter() - started) * 1000.0
        return InputGuardResult(
            GuardVerdict(action=action, reasons=reasons, scores=scores), scan.masked.text, found, timings
        )

    def _scan(self, text: str, policy: GuardPolicy) -> _Scan:
        """All CPU-bound checks, run in a worker thread."""
        t0 = time.perf_counter()
        entities = policy.pii_entities()
        found = self._pii_factory().analyze(text, entities, threshold=policy.pii_threshold) if entities else []
        hide = set(policy.mask_entities) | set(policy.block_entities)
        masked = MaskResult(apply_masks(text, [e for e in found if e.entity_type in hide]), found)
        t1 = time.perf_counter()
        inj_score, inj_reasons = 0.0, []
        if policy.injection_action != "off":
            # The classifier sees masked text: placeholders are neutral and raw PII never reaches a model.
            inj = self._inj_factory().check(masked.text)
            inj_score, inj_reasons = inj.score, inj.reasons
        t2 = time.perf_counter()
        tox_score, tox_reasons = 0.0, []
        if policy.toxicity_action != "off":
            tox = self._tox_factory().check(masked.text)
            tox_score, tox_reasons = tox.score, tox.reasons
        t3 = time.perf_counter()
        timings = {"pii": (t1 - t0) * 1e3, "injection": (t2 - t1) * 1e3, "toxicity": (t3 - t2) * 1e3}
        return _Scan(masked, inj_score, inj_reasons, tox_score, tox_reasons, timings)
