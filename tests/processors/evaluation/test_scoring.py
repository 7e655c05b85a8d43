"""Scoring an evaluation run without services: case selection and the retrieval verdict."""

from __future__ import annotations

from typing import Any

import pytest

from processors.citations import citations_for
from processors.claims.lexical import LexicalClaimChecker
from processors.evaluation.golden import GoldenCase, Relevant
from processors.evaluation.scoring import (
    AnswerRecord,
    Ranking,
    ScoringOptions,
    retrieval_verdict,
    score_case,
    select_cases,
)
from schemas.events import Passage, RankedPassage


def test_select_cases_keeps_refusals_in_proportion() -> None:
    cases = [GoldenCase(id=f"a{i}", question="q?") for i in range(30)]
    cases += [GoldenCase(id=f"r{i}", question="q?", expect_refusal=True) for i in range(10)]
    picked = select_cases(cases, 8)
    assert len(picked) == 8 and sum(c.expect_refusal for c in picked) == 2  # 8 * 10/40
    assert len({c.id for c in picked}) == 8
    assert sum(c.expect_refusal for c in select_cases(cases, 3)) == 1  # at least one of each
    assert select_cases(cases, None) == cases


def test_retrieval_verdict_says_by_how_much_and_what_to_default_to() -> None:
    def modes(**ndcg: float) -> dict[str, dict[str, Any]]:
        return {k.replace("_", "+"): {"ndcg_at_10": v} for k, v in ndcg.items()}

    good = retrieval_verdict(modes(dense=0.5, bm25=0.4, hybrid=0.55, hybrid_rerank=0.7, dense_rerank=0.6), "hybrid")
    assert good.hybrid_rerank_beats_both is True
    assert good.margin_vs_dense == pytest.approx(0.2) and good.margin_vs_bm25 == pytest.approx(0.3)
    assert "keep the default search_mode=hybrid" in good.recommendation
    bad = retrieval_verdict(
        modes(dense=0.6, bm25=0.4, hybrid=0.5, hybrid_rerank=0.55, dense_rerank=0.65, bm25_rerank=0.5), "hybrid"
    )
    assert bad.hybrid_rerank_beats_both is False
    assert bad.margin_vs_dense == pytest.approx(-0.05)
    assert "does NOT beat" in bad.verdict and "-0.050" in bad.verdict
    assert bad.recommended_search_mode == "dense" and "RAGSTREAM_SEARCH_MODE=dense" in bad.recommendation
    # a tie is no reason to change the default
    tie = retrieval_verdict(modes(dense=1.0, bm25=1.0, hybrid=1.0, hybrid_rerank=1.0, dense_rerank=1.0), "hybrid")
    assert tie.hybrid_rerank_beats_both is False and tie.recommended_search_mode == "hybrid"
    assert "higher still" not in tie.recommendation


STRINGS = "Strings are immutable sequences of Unicode code points; methods return new strings."
TIMEOUT = "The frobnicator timeout is set with FROB_TIMEOUT, in seconds; it defaults to 42."


def ranked(*passages: tuple[str, str, bool]) -> list[RankedPassage]:
    return [
        RankedPassage(
            chunk_id=cid,
            doc_id=f"{cid}.html",
            score=1.0 - i / 10,
            in_context=used,
            char_start=0,
            char_end=len(text),
            text=text if used else "",
        )
        for i, (cid, text, used) in enumerate(passages)
    ]


def answered(text: str, passages: list[RankedPassage]) -> AnswerRecord:
    context = [
        Passage(chunk_id=p.chunk_id, doc_id=p.doc_id, text=p.text, score=p.score) for p in passages if p.in_context
    ]
    citations, _ = citations_for(text, context)
    return AnswerRecord(
        request_id="r", text=text, finish_reason="stop", model="llm_small", retrieval=passages, citations=citations
    )


def case(question: str, facts: list[str], doc: str) -> GoldenCase:
    return GoldenCase(id="c1", question=question, key_facts=facts, relevant=[Relevant(doc_id=doc)])


@pytest.mark.parametrize(
    ("text", "passage", "facts"),
    [
        ("Strings are mutable, so you can change them in place [1].", STRINGS, ["immutable"]),
        ("The frobnicator timeout defaults to 7 seconds [1].", TIMEOUT, ["42"]),
    ],
)
def test_an_answer_the_sources_contradict_is_flagged_and_not_correct(text: str, passage: str, facts: list[str]) -> None:
    record = score_case(
        case("q?", facts, "a.html"),
        answered(text, ranked(("a", passage, True))),
        None,
        {},
        ScoringOptions(),
        LexicalClaimChecker(),
    )
    assert record.scores.contradicted_sentences == 1 and record.checks[0].label == "contradicted"
    assert record.scores.correct is False and not record.passed
    assert record.scores.citation_precision == 0.0


def test_a_quoted_answer_with_its_key_fact_is_correct_and_its_citation_valid() -> None:
    quote = "Strings are immutable sequences of Unicode code points [1]."
    record = score_case(
        case("can I change a str in place?", ["immutable"], "a.html"),
        answered(quote, ranked(("a", STRINGS, True))),
        None,
        {},
        ScoringOptions(),
        LexicalClaimChecker(),
    )
    assert record.scores.correct is True and record.scores.key_facts_found == ["immutable"]
    assert record.scores.citations_valid and record.scores.citation_precision == 1.0


def test_retrieval_is_scored_on_the_ranking_the_answer_carried() -> None:
    # The pipeline ranked the relevant page third; a direct search of another mode ranks it first.
    carried = ranked(("x", "Other text.", True), ("y", "More text.", False), ("a", STRINGS, False))
    direct = Ranking(
        ranked={"hybrid": [Passage(chunk_id="a", doc_id="a.html", text=STRINGS, score=1.0, char_end=10)]},
        ms={"hybrid": 4.0},
    )
    record = score_case(
        case("q?", [], "a.html"),
        answered("Other text [1].", carried),
        direct,
        {},
        ScoringOptions(),
        LexicalClaimChecker(),
    )
    assert record.retrieval["pipeline"].mrr == pytest.approx(1 / 3, abs=1e-4)
    assert record.retrieval["hybrid"].mrr == 1.0
    assert [hit.chunk_id for hit in record.retrieval["pipeline"].top] == ["x", "y", "a"]
