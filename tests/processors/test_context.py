from __future__ import annotations

from processors.context import attributed_citations, build_context, citations_for, cited_numbers, estimate_tokens
from processors.guardrails.stream_guard import check_groundedness
from schemas.events import Passage


def _p(i: int, text: str = "x" * 40) -> Passage:
    return Passage(chunk_id=f"c{i}", doc_id=f"d{i}", text=text, score=1.0 - i / 10, title=f"T{i}", heading_path=["H"])


def test_sources_are_numbered_in_rank_order_with_their_labels() -> None:
    context = build_context([_p(0), _p(1), _p(2)])
    assert [s.chunk_id for s in context.sources] == ["c0", "c1", "c2"]
    assert context.text.startswith("[1] T0 > H\n")
    assert "\n\n[3] T2 > H\n" in context.text


def test_budget_drops_whole_passages_and_keeps_later_ones_that_fit() -> None:
    big = _p(1, "y" * 4000)
    context = build_context([_p(0), big, _p(2)], max_tokens=100)
    assert [s.chunk_id for s in context.sources] == ["c0", "c2"]
    assert context.tokens <= 100
    assert "y" * 10 not in context.text


def test_the_best_passage_is_kept_even_if_it_alone_exceeds_the_budget() -> None:
    context = build_context([_p(0, "z" * 8000)], max_tokens=10)
    assert len(context.sources) == 1


def test_citations_map_to_sources_and_invalid_numbers_are_reported() -> None:
    sources = [_p(0), _p(1)]
    citations, invalid = citations_for("A [2]. B [1][2]. C [7].", sources)
    assert [(c.number, c.chunk_id) for c in citations] == [(2, "c1"), (1, "c0")]
    assert invalid == [7]
    assert cited_numbers("no refs") == []


def test_token_estimate_is_monotonic() -> None:
    assert estimate_tokens("a") <= estimate_tokens("a" * 100) <= estimate_tokens("a" * 1000)


def test_uncited_grounded_sentences_are_attributed_to_their_best_source() -> None:
    sources = [
        _p(0, "Tomatoes need deep watering twice a week in summer."),
        _p(1, "The frobnicator timeout is set with FROB_TIMEOUT in seconds."),
    ]
    answer = "Set the frobnicator timeout with FROB_TIMEOUT, in seconds. Bananas are yellow and curved fruit."
    checks = check_groundedness(answer, [s.text for s in sources], 0.5)
    citations = attributed_citations(checks, sources)
    assert [(c.number, c.chunk_id) for c in citations] == [(2, "c1")]  # the banana sentence is grounded nowhere
    assert attributed_citations([], sources) == []
