"""Chunkers: sizes in the model's tokens, overlap, minimum size, exact offsets, deterministic ids."""

from __future__ import annotations

import itertools

import pytest

from processors.ingest.chunking import chunk_id, paragraph_chunker, recursive_chunker, token_chunker
from processors.ingest.loaders import load
from processors.ingest.tokenizer import load_tokenizer

SENTENCE = "Kafka partitions order the events of one key, and consumers in a group share the partitions. "
DOC = "\n\n".join(
    [
        "# Streams",
        " ".join([SENTENCE] * 3),
        "## Partitions",
        " ".join([SENTENCE] * 30),
        "## Tiny",
        "Short.",
        "## Next",
        " ".join([SENTENCE] * 4),
    ]
)


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return load_tokenizer()


def test_token_chunks_fit_the_model_and_offsets_are_exact(tokenizer: object) -> None:
    doc = load(DOC, "text/markdown")
    chunker = token_chunker(64, overlap=16, min_tokens=8, tokenizer=tokenizer)
    spans = chunker.split(doc)
    assert len(spans) > 5
    for span in spans:
        text = doc.text[span.start : span.end]
        assert text == text.strip() and text
        tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]
        assert tokens <= 64
    partitions = [s for s in spans if s.heading_path == ("Streams", "Partitions")]
    assert len(partitions) >= 3
    # consecutive chunks of one section overlap
    assert all(b.start < a.end for a, b in itertools.pairwise(partitions))


def test_small_section_is_merged_with_a_neighbour(tokenizer: object) -> None:
    doc = load(DOC, "text/markdown")
    spans = token_chunker(64, overlap=0, min_tokens=8, tokenizer=tokenizer).split(doc)
    tiny = doc.text.index("## Tiny")
    holder = next(s for s in spans if s.start <= tiny < s.end)
    assert holder.end - holder.start > len("## Tiny\n\nShort.")  # not a chunk of its own
    assert holder.heading_path[:1] == ("Streams",)


def test_paragraph_chunker_keeps_whole_paragraphs() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 30 for i in range(10))
    spans = paragraph_chunker(400, min_chars=50).split(load(text, "text/plain"))
    for span in spans:
        chunk = text[span.start : span.end]
        assert chunk.startswith("Paragraph") and chunk.endswith("word")
        assert len(chunk) <= 400


def test_recursive_chunker_cuts_an_unbroken_string() -> None:
    text = "x" * 2500
    spans = recursive_chunker(1000, overlap=0, min_chars=0).split(load(text, "text/plain"))
    assert [(s.start, s.end) for s in spans] == [(0, 1000), (1000, 2000), (2000, 2500)]


def test_chunk_ids_are_deterministic_and_distinct() -> None:
    assert chunk_id("t", "d", 1, 0) == chunk_id("t", "d", 1, 0)
    ids = {chunk_id("t", "d", v, i) for v in (1, 2) for i in range(50)}
    assert len(ids) == 100
    assert chunk_id("t", "d", 1, 0) != chunk_id("u", "d", 1, 0)


def test_text_before_the_first_heading_takes_that_headings_path_when_merged(tokenizer: object) -> None:
    # YAML front matter and a MyST label, as pip's Markdown docs begin: too small to be a chunk of their own
    text = "---\nhide-toc: true\n---\n\n(guide)=\n\n# Guide\n\n" + " ".join([SENTENCE] * 3) + "\n\n## Usage\n\nCall."
    doc = load(text, "text/markdown")
    assert [s.heading_path for s in doc.sections] == [(), ("Guide",), ("Guide", "Usage")]
    spans = token_chunker(200, overlap=0, min_tokens=24, tokenizer=tokenizer).split(doc)
    assert [(s.start, s.end, s.heading_path, s.anchor) for s in spans] == [(0, len(text), ("Guide",), "guide")]
