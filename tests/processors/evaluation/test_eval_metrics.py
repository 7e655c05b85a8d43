"""Evaluation metrics on small hand-computed examples; expected values come from the definitions, not the code."""

from __future__ import annotations

import math

import pytest

from processors.evaluation import metrics as m
from processors.evaluation.golden import Relevant
from processors.evaluation.replay import (
    Outcome,
    citation_jaccard,
    compare,
    parse_offsets,
    parse_when,
    summarize_replay,
)
from schemas.events import Citation, Passage

DOC = "faq/general.html"
URI = "file:///docs/faq/general.html"


def chunk(cid: str, start: int, end: int, doc: str = DOC, uri: str = URI, text: str = "") -> Passage:
    return Passage(chunk_id=cid, doc_id=doc, text=text, score=0.0, source_uri=uri, char_start=start, char_end=end)


SPAN_A = Relevant(doc_id=DOC, source_uri=URI, char_start=100, char_end=200)
SPAN_B = Relevant(doc_id=DOC, source_uri=URI, char_start=500, char_end=600)


# --- chunk relevance -------------------------------------------------------------------------------------------


def test_a_chunk_is_relevant_only_when_it_overlaps_the_span_of_the_same_document() -> None:
    assert m.chunk_matches(chunk("c", 150, 300), SPAN_A)
    assert m.chunk_matches(chunk("c", 0, 101), SPAN_A)  # one character of overlap
    assert not m.chunk_matches(chunk("c", 0, 100), SPAN_A)  # ends exactly where the answer starts
    assert not m.chunk_matches(chunk("c", 200, 400), SPAN_A)  # starts exactly where it ends
    other = chunk("c", 150, 300, doc="faq/library.html", uri="file:///docs/faq/library.html")
    assert not m.chunk_matches(other, SPAN_A)


def test_either_doc_id_or_source_uri_identifies_the_document() -> None:
    # ingested from another root: the doc id differs, the file URI does not
    assert m.chunk_matches(chunk("c", 150, 300, doc="general.html"), SPAN_A)
    # the corpus moved to another path: the URI differs, the doc id does not
    assert m.chunk_matches(chunk("c", 150, 300, uri="file:///elsewhere/general.html"), SPAN_A)


def test_doc_only_and_snippet_only_items() -> None:
    assert m.chunk_matches(chunk("c", 9000, 9100), Relevant(doc_id=DOC))
    snippet = Relevant(text_snippet="Python is an   interpreted language")
    assert m.chunk_matches(chunk("c", 0, 0, text="Intro. python is an interpreted language, and more"), snippet)
    assert not m.chunk_matches(chunk("c", 0, 0, text="Python is a snake"), snippet)


# --- ranking metrics -------------------------------------------------------------------------------------------

# Ranks 1..6: irrelevant, A, A again (a second chunk of the same answer), irrelevant, B, irrelevant.
RANKED = [
    chunk("r1", 0, 50),
    chunk("r2", 120, 180),
    chunk("r3", 180, 260),
    chunk("r4", 300, 400),
    chunk("r5", 550, 700),
    chunk("r6", 900, 950),
]


def test_recall_counts_golden_items_found() -> None:
    matches = m.match_ranks(RANKED, [SPAN_A, SPAN_B])
    assert m.recall_at_k(matches, 2, 1) == 0.0
    assert m.recall_at_k(matches, 2, 2) == 0.5  # A at rank 2
    assert m.recall_at_k(matches, 2, 4) == 0.5  # rank 3 is A again: still one item of two
    assert m.recall_at_k(matches, 2, 5) == 1.0
    assert m.recall_at_k(matches, 0, 5) is None


def test_reciprocal_rank_is_one_over_the_first_relevant_rank() -> None:
    matches = m.match_ranks(RANKED, [SPAN_A, SPAN_B])
    assert m.reciprocal_rank(matches) == pytest.approx(1 / 2)
    assert m.reciprocal_rank(m.match_ranks(RANKED, [SPAN_B])) == pytest.approx(1 / 5)
    assert m.reciprocal_rank(m.match_ranks(RANKED, [SPAN_B]), k=4) == 0.0
    assert m.reciprocal_rank([set(), set()]) == 0.0


def test_ndcg_from_the_definition() -> None:
    matches = m.match_ranks(RANKED, [SPAN_A, SPAN_B])
    # gains: rank 2 (A, new) = 1, rank 3 (A again) = 0, rank 5 (B, new) = 1; DCG = sum gain / log2(rank + 1)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)  # two items at ranks 1 and 2
    assert m.ndcg_at_k(matches, 2, 10) == pytest.approx(dcg / ideal)
    # cut at 4: only A found; the ideal still has both items within the top 4
    assert m.ndcg_at_k(matches, 2, 4) == pytest.approx((1 / math.log2(3)) / ideal)
    # the perfect ranking scores 1, nothing relevant scores 0
    assert m.ndcg_at_k([{0}, {1}, set()], 2, 10) == pytest.approx(1.0)
    assert m.ndcg_at_k([set(), set()], 2, 10) == 0.0
    # one item, found at rank 3: 1/log2(4) = 0.5
    assert m.ndcg_at_k([set(), set(), {0}], 1, 10) == pytest.approx(0.5)


def test_retrieval_scores_without_relevance_are_unknown() -> None:
    scores = m.retrieval_scores(RANKED, [])
    assert (scores.recall_at_5, scores.recall_at_20, scores.mrr, scores.ndcg_at_10) == (None, None, None, None)
    known = m.retrieval_scores(RANKED, [SPAN_B])
    assert known.recall_at_5 == 1.0 and known.mrr == pytest.approx(0.2)
    assert known.ndcg_at_10 == pytest.approx(1 / math.log2(6))


# --- answers ---------------------------------------------------------------------------------------------------


def test_token_f1_by_hand() -> None:
    # tokens without articles: prediction [cat, sat, on, mat], reference [cat, sat]: precision 2/4, recall 2/2
    assert m.token_f1("The cat sat on the mat [1].", "A cat sat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert m.token_f1("same words", "Same, words!") == pytest.approx(1.0)
    assert m.token_f1("nothing shared", "entirely different") == 0.0
    assert m.token_f1("anything", "") is None


def test_cosine_and_context_relevance() -> None:
    assert m.cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert m.cosine([1.0, 0.0], [-2.0, 0.0]) == pytest.approx(-1.0)
    assert m.cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert m.mean_cosine([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.5)
    assert m.mean_cosine([1.0, 0.0], []) is None


PASSAGE_1 = "The global interpreter lock prevents multiple native threads from executing Python bytecodes at once."
PASSAGE_2 = "Tuples are immutable sequences, lists are mutable sequences."


def test_groundedness_is_the_share_of_supported_sentences() -> None:
    answer = (
        "The global interpreter lock prevents native threads from executing bytecodes at once [1]. "
        "Bananas ripen faster when stored beside apples in paper bags."
    )
    assert m.groundedness(answer, {1: PASSAGE_1}, [PASSAGE_2]) == pytest.approx(0.5)
    # a sentence citing [2] is checked against passage 2 only: the GIL sentence is not in it
    wrong_cite = "The global interpreter lock prevents native threads from executing bytecodes at once [2]."
    assert m.groundedness(wrong_cite, {1: PASSAGE_1, 2: PASSAGE_2}, []) == 0.0
    assert m.groundedness(wrong_cite.replace("[2]", "[1]"), {1: PASSAGE_1, 2: PASSAGE_2}, []) == 1.0
    assert m.groundedness("Yes.", {}, [PASSAGE_1]) is None  # nothing checkable


def test_citation_validity() -> None:
    cites = [Citation(number=1, chunk_id="c1", doc_id=DOC), Citation(number=2, chunk_id="c2", doc_id=DOC)]
    ok = m.citation_validity("A [1]. B [1, 2].", cites, {"c1", "c2", "c9"})
    assert ok.valid and ok.markers == 2
    unknown = m.citation_validity("A [1]. B [3].", cites, {"c1", "c2"})
    assert not unknown.valid and unknown.unknown == [3]
    stray = m.citation_validity("A [2].", cites, {"c1"})
    assert not stray.valid and stray.not_retrieved == [2]
    assert m.citation_validity("No markers.", [], []).valid


def test_refusal_detection_and_pass_rule() -> None:
    assert m.is_refusal("refused", "anything")
    assert m.is_refusal("stop", "I don't have enough information to answer that.")
    assert m.is_refusal(None, "", "blocked")
    assert not m.is_refusal("stop", "Python is a language [1].")
    common = {"error": False, "grounded": 0.8, "similarity": 0.7, "citations_valid": True}
    assert m.case_passes(expect_refusal=False, refused=False, **common)
    assert not m.case_passes(expect_refusal=False, refused=True, **common)
    assert m.case_passes(expect_refusal=True, refused=True, **common)
    assert not m.case_passes(expect_refusal=True, refused=False, **common)
    assert not m.case_passes(expect_refusal=False, refused=False, **{**common, "grounded": 0.4})
    assert not m.case_passes(expect_refusal=False, refused=False, **{**common, "similarity": 0.49})
    assert not m.case_passes(expect_refusal=False, refused=False, **{**common, "citations_valid": False})
    assert not m.case_passes(expect_refusal=True, refused=True, **{**common, "error": True})
    # unknown groundedness or no reference does not fail a case by itself
    assert m.case_passes(expect_refusal=False, refused=False, **{**common, "grounded": None, "similarity": None})
    strict = m.PassRule(groundedness=0.9, similarity=0.5)
    assert not m.case_passes(expect_refusal=False, refused=False, rule=strict, **common)


def test_percentile_and_mean() -> None:
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert m.percentile([10.0, 20.0], 95) == pytest.approx(19.5)  # 10 + 0.95 * (20 - 10)
    assert m.percentile([], 50) is None
    assert m.mean_of([1.0, None, 3.0]) == 2.0
    assert m.mean_of([None]) is None


# --- replay diffs ----------------------------------------------------------------------------------------------


def test_parse_when_and_offsets() -> None:
    assert parse_when("2026-11-24T10:00:00Z") == 1795514400.0
    assert parse_when("2026-11-24T11:00:00+01:00") == 1795514400.0
    assert parse_when("1795514400") == 1795514400.0
    assert parse_when("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_when("-2h", now=10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError):
        parse_when("yesterday-ish")
    assert parse_offsets("0:100-200, 1:5-") == {0: (100, 200), 1: (5, None)}
    with pytest.raises(ValueError):
        parse_offsets("0:200-100")


def test_replay_compare_and_summary() -> None:
    assert citation_jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)
    assert citation_jaccard([], []) == 1.0
    base = Outcome(request_id="b", text="Lists are mutable [1].", chunk_ids=["c1"], ttft_ms=100.0, total_ms=900.0)
    cand = Outcome(
        request_id="c",
        text="I don't have enough information to answer that.",
        refused=True,
        ttft_ms=40.0,
        total_ms=60.0,
    )
    diff = compare(base, cand, similarity=0.2)
    assert diff["refusal_change"] == "newly refused"
    assert diff["answer_similarity"] is None  # a refusal is not a reworded answer
    assert diff["citations_removed"] == ["c1"] and diff["citation_jaccard"] == 0.0
    assert diff["ttft_delta_ms"] == -60.0 and diff["total_delta_ms"] == -840.0
    same = compare(base, base, similarity=1.0)
    assert same["identical"] and same["answer_similarity"] == 1.0 and same["refusal_change"] == ""
    pairs = [
        {"baseline": vars(base), "candidate": vars(cand), "diff": diff},
        {"baseline": vars(base), "candidate": vars(base), "diff": same},
    ]
    summary = summarize_replay(pairs)
    assert summary["requests"] == 2
    assert summary["refusals"]["newly refused"] == 1 and summary["refusals"]["candidate refused"] == 1
    assert summary["latency_ms"]["ttft"]["delta_mean"] == pytest.approx(-30.0)  # (-60 + 0) / 2
    assert summary["latency_ms"]["total"]["baseline"]["p50"] == 900.0


def test_refusal_threshold_by_hand() -> None:
    answerable, out_of_corpus = [0.8, 0.9, 0.95], [0.6, 0.7]
    assert m.threshold_accuracy(answerable, out_of_corpus, 0.3) == pytest.approx(3 / 5)  # refuses nothing
    assert m.threshold_accuracy(answerable, out_of_corpus, 0.85) == pytest.approx(4 / 5)  # 0.8 wrongly refused
    threshold, accuracy = m.best_threshold(answerable, out_of_corpus) or (0.0, 0.0)
    assert accuracy == 1.0 and threshold == pytest.approx(0.75)  # midway between 0.7 and 0.8
    # overlapping scores: no perfect threshold; 0.65 (between 0.6 and 0.7) gets 4 of 5 right
    threshold, accuracy = m.best_threshold([0.7, 0.9], [0.6, 0.8, 0.5]) or (0.0, 0.0)
    assert accuracy == pytest.approx(4 / 5) and threshold == pytest.approx(0.65)
    assert m.best_threshold([], []) is None


def test_decode_tokens_per_s_counts_tokens_after_the_first() -> None:
    # 11 tokens: the first at 100 ms, the last at 600 ms -> 10 tokens in 0.5 s
    assert m.decode_tokens_per_s(11, {"ttft_model": 100.0, "generate": 600.0}) == pytest.approx(20.0)
    assert m.decode_tokens_per_s(1, {"ttft_model": 100.0, "generate": 600.0}) is None  # nothing to time
    assert m.decode_tokens_per_s(11, {"embed": 5.0}) is None  # no model ran (refusal, cache hit)
