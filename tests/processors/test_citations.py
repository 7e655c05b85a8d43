"""One marker rule for citations, shared by the context builder, the output guard and the eval."""

from __future__ import annotations

from processors.citations import (
    REFUSAL,
    attributed_citations,
    citations_for,
    cited_numbers,
    is_refusal_text,
    strip_citations,
)
from processors.evaluation.metrics import citation_validity
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.stream_guard import StreamingOutputGuard, check_groundedness
from schemas.events import Passage


def _p(i: int, text: str = "x" * 40) -> Passage:
    return Passage(chunk_id=f"c{i}", doc_id=f"d{i}", text=text, score=1.0 - i / 10, title=f"T{i}", heading_path=["H"])


def test_citations_map_to_sources_and_invalid_numbers_are_reported() -> None:
    sources = [_p(0), _p(1)]
    citations, invalid = citations_for("A [2]. B [1][2]. C [7].", sources)
    assert [(c.number, c.chunk_id) for c in citations] == [(2, "c1"), (1, "c0")]
    assert invalid == [7]
    assert cited_numbers("no refs") == []


def test_a_grouped_marker_cites_every_number_in_it() -> None:
    assert cited_numbers("Both hold [1, 2]; the second also [2;3] and [1].") == [1, 2, 3]
    assert strip_citations("Lists are mutable [1, 2].") == "Lists are mutable ."


def test_context_output_guard_and_eval_agree_on_a_grouped_marker() -> None:
    sources = [_p(0, "Lists are mutable sequences."), _p(1, "Tuples are immutable sequences.")]
    answer = "Lists can change but tuples cannot [1, 2]."
    citations, invalid = citations_for(answer, sources)
    assert [c.number for c in citations] == [1, 2] and invalid == []  # both become citation events
    guard = StreamingOutputGuard(GuardPolicy(), sources)
    guard.push(answer)
    guard.finish()
    report = guard.report()
    assert report.invalid_citations == [] and not any("invalid_citation" in r for r in report.verdict.reasons)
    check = citation_validity(answer, citations, retrieved_ids=["c0", "c1"])
    assert check.valid and check.markers == 2
    out_of_range, bad = citations_for("Nothing supports this [1, 9].", sources)
    assert [c.number for c in out_of_range] == [1] and bad == [9]


def test_the_refusal_is_recognised_with_or_without_a_marker() -> None:
    assert is_refusal_text(REFUSAL)
    assert is_refusal_text(REFUSAL.replace(".", " [1]."))
    assert not is_refusal_text("Lists are mutable [1].")


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
