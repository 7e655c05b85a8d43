"""Chunkers: paragraph, recursive (characters) and token-aware (the embedding model's tokens).

All three are one engine with different settings. A section's text is cut into *atoms* (paragraphs; oversize ones
recursively by lines, sentences, words, then a hard cut) and atoms are packed greedily up to ``max_size``, with
``overlap`` carried from the end of one chunk into the next. Sizes are measured on the exact character span, so a
token chunk is counted by the tokenizer over the real text, not by summing pieces. Chunks never cross a heading
unless one is smaller than ``min_size`` (then it joins a neighbour and the heading path becomes their common prefix,
or the neighbour's when the small one is the text before the document's first heading).
Chunk ids are deterministic from (tenant, doc_id, version, index), so a replayed event overwrites instead of
duplicating.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from processors.ingest.loaders import LoadedDocument

PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
LINE = re.compile(r"\n")
SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
WORD = re.compile(r"\s+")
_WORD_START = re.compile(r"\S+")


class Measure(Protocol):
    """Size of spans of one text, in the chunker's unit."""

    def length(self, start: int, end: int) -> int: ...

    def cuts(self, start: int, end: int, size: int) -> list[int]:
        """Offsets that cut ``[start, end)`` into pieces of at most ``size`` units."""
        ...


class Sizer(Protocol):
    unit: str

    def measure(self, text: str) -> Measure: ...


class CharMeasure:
    def length(self, start: int, end: int) -> int:
        return end - start

    def cuts(self, start: int, end: int, size: int) -> list[int]:
        return list(range(start + size, end, size))


class CharSizer:
    unit = "chars"

    def measure(self, text: str) -> Measure:
        return CharMeasure()


class TokenMeasure:
    """Token count of any span by binary search over the token start offsets of one tokenization of the text."""

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts

    def length(self, start: int, end: int) -> int:
        return bisect_left(self.starts, end) - bisect_left(self.starts, start)

    def cuts(self, start: int, end: int, size: int) -> list[int]:
        first = bisect_left(self.starts, start)
        last = bisect_left(self.starts, end)
        return [self.starts[i] for i in range(first + size, last, size) if start < self.starts[i] < end]


class TokenSizer:
    """Counts with a ``tokenizers.Tokenizer`` (the embedding model's), tokenizing each document once."""

    unit = "tokens"

    def __init__(self, tokenizer: object | None = None, *, cache_dir: Path | None = None) -> None:
        if tokenizer is None:
            from processors.ingest.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(cache_dir)
        self.tokenizer = tokenizer

    def measure(self, text: str) -> Measure:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
        return TokenMeasure([start for start, _ in encoding.offsets])

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ChunkSpan:
    start: int
    end: int
    heading_path: tuple[str, ...]
    anchor: str = ""
    size: int = 0


class Chunker:
    """Split a loaded document into spans of at most ``max_size`` units with ``overlap`` and ``min_size``."""

    def __init__(
        self,
        sizer: Sizer,
        *,
        max_size: int,
        overlap: int = 0,
        min_size: int = 0,
        separators: Sequence[re.Pattern[str]] = (PARAGRAPH, LINE, SENTENCE, WORD),
    ) -> None:
        if max_size <= 0 or overlap < 0 or overlap >= max_size or min_size > max_size:
            raise ValueError("need 0 <= overlap < max_size and min_size <= max_size")
        self.sizer = sizer
        self.max_size = max_size
        self.overlap = overlap
        self.min_size = min_size
        self.separators = tuple(separators)

    def split(self, doc: LoadedDocument) -> list[ChunkSpan]:
        text = doc.text
        measure = self.sizer.measure(text)
        pieces: list[tuple[int, int, int]] = []  # start, end, section index
        for number, section in enumerate(doc.sections):
            atoms: list[tuple[int, int]] = []
            self._atoms(text, measure, section.start, section.end, 0, atoms)
            pieces.extend((s, e, number) for s, e in self._pack(text, measure, atoms))
        return self._merge_small(doc, measure, [p for p in (_strip(text, *p) for p in pieces) if p is not None])

    def _atoms(self, text: str, measure: Measure, start: int, end: int, level: int, out: list[tuple[int, int]]) -> None:
        if measure.length(start, end) <= self.max_size:
            if end > start:
                out.append((start, end))
            return
        if level >= len(self.separators):
            bounds = [start, *measure.cuts(start, end, self.max_size), end]
            out.extend((a, b) for a, b in itertools.pairwise(bounds) if b > a)
            return
        cuts = [m.end() for m in self.separators[level].finditer(text, start, end) if start < m.end() < end]
        previous = start
        for cut in [*cuts, end]:
            self._atoms(text, measure, previous, cut, level + 1, out)
            previous = cut

    def _pack(self, text: str, measure: Measure, atoms: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Greedy packing; the next chunk starts at the earliest word of this one's tail that fits ``overlap``."""
        spans: list[tuple[int, int]] = []
        i, n = 0, len(atoms)
        start = atoms[0][0] if atoms else 0
        while i < n:
            j = i
            while j + 1 < n and measure.length(start, atoms[j + 1][1]) <= self.max_size:
                j += 1
            end = atoms[j][1]
            spans.append((start, end))
            if j + 1 >= n:
                break
            following = atoms[j + 1][0]
            if self.overlap:
                words = [m.start() for m in _WORD_START.finditer(text, start, end)]
                for position in reversed(words[1:]):
                    if (
                        measure.length(position, end) > self.overlap
                        or measure.length(position, atoms[j + 1][1]) > self.max_size
                    ):
                        break
                    following = position
            start, i = following, j + 1
        return spans

    def _merge_small(
        self, doc: LoadedDocument, measure: Measure, pieces: list[tuple[int, int, int]]
    ) -> list[ChunkSpan]:
        merged: list[tuple[int, int, tuple[str, ...], str]] = []
        preamble_end = next((s.start for s in doc.sections if s.heading_path), 0)
        for start, end, number in pieces:
            section = doc.sections[number]
            if merged:
                p_start, p_end, p_path, p_anchor = merged[-1]
                small = measure.length(start, end) < self.min_size or measure.length(p_start, p_end) < self.min_size
                if small and measure.length(p_start, end) <= self.max_size:
                    if p_end <= preamble_end:  # text before the first heading (a label, front matter) is no place
                        merged[-1] = (p_start, end, section.heading_path, section.anchor)
                    else:
                        merged[-1] = (p_start, end, _common_prefix(p_path, section.heading_path), p_anchor)
                    continue
            merged.append((start, end, section.heading_path, section.anchor))
        return [ChunkSpan(s, e, path, anchor, measure.length(s, e)) for s, e, path, anchor in merged]


def _strip(text: str, start: int, end: int, number: int) -> tuple[int, int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end, number) if end > start else None


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


ChunkerKind = Literal["paragraph", "recursive", "token"]


def paragraph_chunker(max_chars: int = 1500, overlap: int = 0, min_chars: int = 200) -> Chunker:
    """Whole paragraphs packed up to ``max_chars``; only an oversize paragraph is cut further."""
    return Chunker(CharSizer(), max_size=max_chars, overlap=overlap, min_size=min_chars)


def recursive_chunker(max_chars: int = 1000, overlap: int = 150, min_chars: int = 100) -> Chunker:
    """Character-sized chunks cut at the coarsest boundary that fits: paragraph, line, sentence, word."""
    return Chunker(CharSizer(), max_size=max_chars, overlap=overlap, min_size=min_chars)


def token_chunker(
    max_tokens: int = 200, overlap: int = 32, min_tokens: int = 24, *, tokenizer: object | None = None
) -> Chunker:
    """Chunks measured in the embedding model's tokens; 200 leaves room for [CLS]/[SEP] and a heading header
    within all-MiniLM-L6-v2's 256-token window, so the model never silently truncates a chunk."""
    return Chunker(TokenSizer(tokenizer), max_size=max_tokens, overlap=overlap, min_size=min_tokens)


def make_chunker(kind: ChunkerKind = "token", *, max_size: int | None = None, overlap: int | None = None,
                 min_size: int | None = None) -> Chunker:  # fmt: skip
    if kind == "paragraph":
        return paragraph_chunker(max_size or 1500, overlap or 0, 200 if min_size is None else min_size)
    if kind == "recursive":
        return recursive_chunker(max_size or 1000, 150 if overlap is None else overlap,
                                 100 if min_size is None else min_size)  # fmt: skip
    return token_chunker(max_size or 200, 32 if overlap is None else overlap, 24 if min_size is None else min_size)


def chunk_id(tenant: str, doc_id: str, version: int, index: int) -> str:
    """128-bit hex id, the same for the same (tenant, doc_id, version, index) on every run and machine."""
    key = f"{tenant}\x1f{doc_id}\x1f{version}\x1f{index}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()
