"""Claim checking: does a passage support, contradict, or not mention one sentence of an answer?

The eval scores answers with it (an answer is correct only if no sentence contradicts its sources) and the output
guard flags answers with it. :class:`ClaimChecker` is the interface; :mod:`processors.claims.lexical` is the
implementation that needs no model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

from processors.citations import cited_numbers, strip_citations

Label = Literal["supported", "contradicted", "not_mentioned"]


class ClaimVerdict(NamedTuple):
    label: Label
    reason: str


class ClaimChecker(Protocol):
    name: str

    def check(self, sentence: str, passage: str) -> ClaimVerdict:
        """How ``passage`` stands to the claim ``sentence`` makes."""
        ...


class SentenceVerdict(NamedTuple):
    sentence: str
    label: Label
    passage: int | None  # the source number the verdict is about (1-based), None when no source was given
    reason: str


_ORDER: Mapping[Label, int] = {"contradicted": 0, "supported": 1, "not_mentioned": 2}
_UNCITED_ORDER: Mapping[Label, int] = {"supported": 0, "contradicted": 1, "not_mentioned": 2}


def check_sentences(sentences: Sequence[str], sources: Sequence[str], checker: ClaimChecker) -> list[SentenceVerdict]:
    """One verdict per sentence. A sentence citing ``[n]`` is judged against those sources, and a contradiction by
    one of them wins, then support, else not mentioned. A sentence citing nothing is judged against every source
    and is supported when any of them supports it: the other sources may well be about something else (another
    version, another function), so only when none supports it does a contradiction count."""
    verdicts: list[SentenceVerdict] = []
    for sentence in sentences:
        cited = [n for n in cited_numbers(sentence) if 1 <= n <= len(sources)]
        numbers = cited or list(range(1, len(sources) + 1))
        text = strip_citations(sentence)
        if not numbers or not text:
            verdicts.append(SentenceVerdict(sentence, "not_mentioned", None, "no source to check it against"))
            continue
        judged = [(n, checker.check(text, sources[n - 1])) for n in numbers]
        order = _ORDER if cited else _UNCITED_ORDER
        number, verdict = min(judged, key=lambda item: order[item[1].label])
        verdicts.append(SentenceVerdict(sentence, verdict.label, number, verdict.reason))
    return verdicts
