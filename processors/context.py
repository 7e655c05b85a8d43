"""Context building: numbered sources within a token budget, and citations mapped back to them.

Sources are numbered in rank order, so ``[1]`` is always the best passage. Passages that do not fit the budget are
dropped whole rather than cut, because a cut passage invites claims the source never made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import msgspec

from schemas.events import Citation, Passage

_CITATION = re.compile(r"\[(\d{1,3})\]")


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning estimate (~4 characters per token for English with code)."""
    return max(1, (len(text) + 3) // 4)


class Context(msgspec.Struct, frozen=True):
    text: str
    sources: list[Passage]  # sources[n - 1] is source [n]
    tokens: int


def source_label(passage: Passage) -> str:
    path = " > ".join(part for part in (passage.title, *passage.heading_path) if part)
    return path or passage.source_uri or passage.doc_id


def build_context(passages: Sequence[Passage], *, max_tokens: int = 1500, max_sources: int = 5) -> Context:
    blocks: list[str] = []
    sources: list[Passage] = []
    used = 0
    for passage in passages:
        if len(sources) >= max_sources:
            break
        block = f"[{len(sources) + 1}] {source_label(passage)}\n{passage.text.strip()}"
        cost = estimate_tokens(block)
        if sources and used + cost > max_tokens:
            continue  # a later, shorter passage may still fit
        blocks.append(block)
        sources.append(passage)
        used += cost
    return Context(text="\n\n".join(blocks), sources=sources, tokens=used)


def cited_numbers(text: str) -> list[int]:
    """The distinct ``[n]`` markers in ``text``, in order of first use."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


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
    """Citations for the valid ``[n]`` in ``text``, and the numbers that refer to no source."""
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
    """Citations for an answer that wrote no ``[n]``: the sources that best support its grounded sentences."""
    numbers = sorted({s.best_passage for s in sentences if s.grounded and s.best_passage is not None})
    return [citation(n, sources[n - 1]) for n in numbers if 1 <= n <= len(sources)]
