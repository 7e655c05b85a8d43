"""Citations and the refusal: one marker rule that the context builder, the output guard and the eval share.

A marker is ``[n]`` or a group ``[n, m]`` / ``[n; m]`` (what models write when two sources support one claim);
numbers are 1-based positions in the context's numbered sources. The refusal is the sentence the ``rag_qa`` prompt
tells the model to answer with when the sources do not hold the answer, and what the pipeline itself answers when
retrieval finds nothing relevant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Protocol

from schemas.events import Citation, Passage

REFUSAL: Final = "I don't have enough information to answer that."
# What marks an answer as the refusal, however the model ends the sentence.
REFUSAL_PREFIX: Final = "I don't have enough information"

MARKER: Final = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
_GROUP_SEPARATOR: Final = re.compile(r"\s*[,;]\s*")
_SPACE: Final = re.compile(r"\s+")


def cited_numbers(text: str) -> list[int]:
    """The distinct numbers cited in ``text``, in order of first use (``[2] ... [1, 2]`` -> ``[2, 1]``)."""
    seen: dict[int, None] = {}
    for group in MARKER.findall(text):
        for number in _GROUP_SEPARATOR.split(group):
            seen.setdefault(int(number), None)
    return list(seen)


def strip_citations(text: str) -> str:
    """``text`` without its markers, whitespace collapsed: what a reader or a similarity measure should see."""
    return _SPACE.sub(" ", MARKER.sub(" ", text)).strip()


def is_refusal_text(text: str) -> bool:
    return strip_citations(text).startswith(REFUSAL_PREFIX)


def citation(number: int, passage: Passage) -> Citation:
    return Citation(
        number=number,
        chunk_id=passage.chunk_id,
        doc_id=passage.doc_id,
        source_uri=passage.source_uri,
        title=passage.title,
        heading_path=list(passage.heading_path),
        char_start=passage.char_start,
        char_end=passage.char_end,
    )


def citations_for(text: str, sources: Sequence[Passage]) -> tuple[list[Citation], list[int]]:
    """Citations for the valid numbers cited in ``text``, and the numbers that refer to no source."""
    valid: list[Citation] = []
    invalid: list[int] = []
    for number in cited_numbers(text):
        if 1 <= number <= len(sources):
            valid.append(citation(number, sources[number - 1]))
        else:
            invalid.append(number)
    return valid, invalid


class SupportedSentence(Protocol):
    @property
    def best_passage(self) -> int | None: ...  # 1-based source number

    @property
    def grounded(self) -> bool: ...


def attributed_citations(sentences: Sequence[SupportedSentence], sources: Sequence[Passage]) -> list[Citation]:
    """Citations for an answer that wrote no marker: the sources that best support its grounded sentences."""
    numbers = sorted({s.best_passage for s in sentences if s.grounded and s.best_passage is not None})
    return [citation(n, sources[n - 1]) for n in numbers if 1 <= n <= len(sources)]
