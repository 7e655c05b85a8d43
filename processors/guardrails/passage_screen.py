"""Retrieved passages are data, not instructions: the input guard's injection detector screens them too.

A document can carry an attack as well as a question can ("ignore the rules above and ..."), and it reaches the model
with the authority of a source. Passages the detector scores at or above the tenant's injection threshold are
withheld from the prompt; the answer's ranking records which and why, so an operator can find the document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from processors.guardrails.injection import InjectionDetector, get_injection_detector
from processors.guardrails.policy import GuardPolicy


class InjectionScreen:
    """:class:`processors.protocols.PassageScreen` backed by the same detector (rules + model) as the input guard."""

    def __init__(self, detector: InjectionDetector | None = None) -> None:
        self._detector = detector

    def _screen(self, texts: Sequence[str], threshold: float) -> list[str]:
        detector = self._detector or get_injection_detector()
        reasons: list[str] = []
        for text in texts:
            found = detector.check(text)
            if found.score >= threshold:
                why = ";".join(found.reasons) or "model"
                reasons.append(f"prompt_injection:{found.score:.2f}:{why}")
            else:
                reasons.append("")
        return reasons

    async def screen(self, texts: Sequence[str], policy: GuardPolicy) -> list[str]:
        """One reason per text ("" = clean). A tenant whose policy turns injection checks off gets no screening."""
        if policy.injection_action == "off" or not texts:
            return ["" for _ in texts]
        return await asyncio.to_thread(self._screen, list(texts), policy.injection_threshold)
