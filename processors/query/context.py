"""Context building: numbered sources within a token budget.

Sources are numbered in rank order, so ``[1]`` is always the best passage. Passages that do not fit the budget are
dropped whole rather than cut, because a cut passage invites claims the source never made. How answers cite these
numbers is :mod:`processors.citations`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from schemas.events import Passage


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning estimate (~4 characters per token for English with code)."""
    return max(1, (len(text) + 3) // 4)


_SOURCES_TAG = re.compile(r"<\s*(/?)\s*sources\s*>", re.IGNORECASE)
_SOURCE_NUMBER_AT_LINE_START = re.compile(r"^(\s*)\[(\d+)\]", re.MULTILINE)


def as_source_text(text: str) -> str:
    """A passage as it may appear inside the prompt's sources: quoted data that cannot close the ``<sources>``
    block or start a line that reads as another numbered source. (Chat control tokens are neutralised for every
    message by :func:`processors.adapters.chat_formats.render_chat`.)"""
    text = _SOURCES_TAG.sub(lambda m: f"\u2039{m.group(1)}sources\u203a", text)
    return _SOURCE_NUMBER_AT_LINE_START.sub(lambda m: f"{m.group(1)}({m.group(2)})", text)


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
        label = as_source_text(source_label(passage)).replace("\n", " ")
        block = f"[{len(sources) + 1}] {label}\n{as_source_text(passage.text.strip())}"
        cost = estimate_tokens(block)
        if sources and used + cost > max_tokens:
            continue  # a later, shorter passage may still fit
        blocks.append(block)
        sources.append(passage)
        used += cost
    return Context(text="\n\n".join(blocks), sources=sources, tokens=used)
