"""Scoring an evaluation run without services: case selection and the retrieval verdict."""

from __future__ import annotations

from typing import Any

import pytest

from processors.evaluation.golden import GoldenCase
from processors.evaluation.scoring import retrieval_verdict, select_cases


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
    assert good["hybrid_rerank_beats_both"] is True
    assert good["margin_vs_dense"] == pytest.approx(0.2) and good["margin_vs_bm25"] == pytest.approx(0.3)
    assert "keep the default search_mode=hybrid" in good["recommendation"]
    bad = retrieval_verdict(
        modes(dense=0.6, bm25=0.4, hybrid=0.5, hybrid_rerank=0.55, dense_rerank=0.65, bm25_rerank=0.5), "hybrid"
    )
    assert bad["hybrid_rerank_beats_both"] is False
    assert bad["margin_vs_dense"] == pytest.approx(-0.05)
    assert "does NOT beat" in bad["verdict"] and "-0.050" in bad["verdict"]
    assert bad["recommended_search_mode"] == "dense" and "RAGSTREAM_SEARCH_MODE=dense" in bad["recommendation"]
    # a tie is no reason to change the default
    tie = retrieval_verdict(modes(dense=1.0, bm25=1.0, hybrid=1.0, hybrid_rerank=1.0, dense_rerank=1.0), "hybrid")
    assert tie["hybrid_rerank_beats_both"] is False and tie["recommended_search_mode"] == "hybrid"
    assert "higher still" not in tie["recommendation"]
