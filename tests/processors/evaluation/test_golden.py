"""The golden-set format and the FAQ builder, on the real Python FAQ pages from python3.11-doc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.settings import REPO_ROOT
from processors.evaluation.golden import (
    DEFAULT_FAQ_DIR,
    OUT_OF_CORPUS,
    GoldenCase,
    GoldenError,
    Relevant,
    build_faq_golden,
    faq_cases,
    is_question,
    load_golden,
    write_golden,
)
from processors.evaluation.metrics import chunk_matches
from processors.ingest.chunking import recursive_chunker
from processors.ingest.loaders import load_html
from schemas.events import Passage

GENERAL = DEFAULT_FAQ_DIR / "general.html"
COMMITTED = REPO_ROOT / "benchmarks" / "eval" / "golden" / "python_faq.jsonl"

needs_faq = pytest.mark.usefixtures("python_docs")


@needs_faq
def test_faq_page_questions_answers_and_spans() -> None:
    html = GENERAL.read_text(encoding="utf-8")
    cases = faq_cases(html, doc_id="faq/general.html", source_uri=GENERAL.as_uri(), page="general")
    by_question = {c.question: c for c in cases}
    case = by_question["What is Python?"]
    assert case.id == "faq/general#what-is-python"
    assert case.reference_answer.startswith("Python is an interpreted, interactive, object-oriented programming")
    assert "What is Python?" not in case.reference_answer  # the heading is not part of the answer
    # the answer stops at the next heading
    assert "What is the Python Software Foundation?" not in case.reference_answer
    assert not case.expect_refusal and "faq:general" in case.tags
    # section headings that ask nothing are not cases
    assert "General Information" not in by_question and "Python in the real world" not in by_question
    # the span is in the ingestion loader's coordinates: cutting the cleaned text there gives the answer
    doc = load_html(html)
    for c in cases:
        (rel,) = c.relevant
        assert rel.char_start is not None and rel.char_end is not None
        assert doc.text[rel.char_start : rel.char_end] == c.reference_answer
        assert rel.doc_id == "faq/general.html" and rel.source_uri == GENERAL.as_uri()
    assert len(cases) >= 20


@needs_faq
def test_chunks_of_the_ingested_page_match_the_span() -> None:
    """What the indexer would store: chunk spans from the real chunker over the loader's text."""
    html = GENERAL.read_text(encoding="utf-8")
    doc = load_html(html)
    case = next(
        c
        for c in faq_cases(html, doc_id="faq/general.html", source_uri=GENERAL.as_uri(), page="general")
        if c.question == "What is Python?"
    )
    spans = recursive_chunker().split(doc)
    passages = [
        Passage(
            chunk_id=str(i),
            doc_id="faq/general.html",
            text=doc.text[s.start : s.end],
            score=0.0,
            source_uri=GENERAL.as_uri(),
            char_start=s.start,
            char_end=s.end,
        )
        for i, s in enumerate(spans)
    ]
    hits = [p for p in passages if chunk_matches(p, case.relevant[0])]
    assert hits, "no chunk overlaps the answer span"
    assert all("Python" in p.text for p in hits)
    assert any(p.text.find("interpreted, interactive") >= 0 for p in hits)
    assert len(hits) < len(passages) / 4  # the span is local, not the whole page


@needs_faq
def test_build_with_another_corpus_root_and_prefix(tmp_path: Path) -> None:
    faq = tmp_path / "faq"
    faq.mkdir()
    shutil.copy(GENERAL, faq / "general.html")
    shutil.copy(DEFAULT_FAQ_DIR / "index.html", faq / "index.html")
    cases = build_faq_golden(faq, corpus_root=faq, prefix="py/", refusals=[("x", "How do I bake bread?")])
    answerable = [c for c in cases if not c.expect_refusal]
    assert answerable and all(c.relevant[0].doc_id == "py/general.html" for c in answerable)
    assert all(c.relevant[0].source_uri == (faq / "general.html").resolve().as_uri() for c in answerable)
    assert not any("faq:index" in c.tags for c in cases)
    assert [c.id for c in cases if c.expect_refusal] == ["refuse/x"]


@needs_faq
def test_committed_golden_set_is_what_the_builder_makes() -> None:
    """Reproducible runs: the committed file must be regenerated when the builder changes."""
    committed = load_golden(COMMITTED)
    assert committed == build_faq_golden()
    refusals = [c for c in committed if c.expect_refusal]
    assert len(refusals) >= 20 and all(not c.relevant and not c.reference_answer for c in refusals)
    assert len(committed) - len(refusals) >= 150


def test_out_of_corpus_questions_are_unique_questions() -> None:
    ids = [i for i, _ in OUT_OF_CORPUS]
    assert len(ids) == len(set(ids)) >= 20
    assert all(q.endswith("?") for _, q in OUT_OF_CORPUS)


def test_round_trip_and_any_question_file(tmp_path: Path) -> None:
    cases = [
        GoldenCase(id="a", question="Q1?", reference_answer="A1", relevant=[Relevant(text_snippet="A1")], tags=["t"]),
        GoldenCase(id="b", question="Q2?", expect_refusal=True),
    ]
    path = tmp_path / "set.jsonl"
    assert write_golden(cases, path) == 2
    assert load_golden(path) == cases
    # extra fields from another tool are ignored; comments and blank lines are skipped
    extra = tmp_path / "extra.jsonl"
    extra.write_text('# mine\n\n{"id": "x", "question": "Why?", "difficulty": 3, "relevant": [{"doc_id": "d"}]}\n')
    (case,) = load_golden(extra)
    assert case.relevant == [Relevant(doc_id="d")] and not case.expect_refusal
    questions = tmp_path / "questions.txt"
    questions.write_text("How do I do X?\n# skip me\n\nWhat is Y?\n")
    loaded = load_golden(questions)
    assert [c.question for c in loaded] == ["How do I do X?", "What is Y?"]
    assert [c.id for c in loaded] == ["questions-1", "questions-4"]


def test_invalid_golden_lines_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\n')
    with pytest.raises(GoldenError, match=r"bad\.jsonl:2"):
        load_golden(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "question": "ok?"}\n{"id": "a", "question": "again?"}\n')
    with pytest.raises(GoldenError, match="duplicate"):
        load_golden(dup)


def test_question_headings() -> None:
    assert is_question("Why is it called Python?")
    assert is_question("How do you remove multiple items from a list")
    assert not is_question("General Information")
    assert not is_question("Core Language")
