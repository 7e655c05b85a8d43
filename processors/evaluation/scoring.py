"""Scoring an evaluation run, as pure functions over msgspec Structs: what the pipeline answered (with the ranking
it answered from) and what each retrieval mode returns go in; per-case records and the run's summary come out.
No Kafka, no models: embeddings arrive as vectors and claims are judged by a :class:`ClaimChecker` given in.
``streams.clients.evaluation`` gathers the inputs over the real services and calls these.

What "correct" means here: an answered, answerable case whose answer states every key fact of the golden case
(:mod:`processors.evaluation.correctness`) and none of whose sentences the sources contradict
(:mod:`processors.claims`). Retrieval of the pipeline is scored on the ranking the answer carries
(``AnswerDone.retrieval``), not on a second search; the other modes are searched directly to compare them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from processors.citations import strip_citations
from processors.claims.verdicts import ClaimChecker, check_sentences
from processors.evaluation import metrics as m
from processors.evaluation.correctness import key_facts
from processors.evaluation.golden import GoldenCase
from processors.guardrails.stream_guard import split_sentences
from processors.protocols import SearchMode
from schemas.events import Citation, Passage, RankedPassage

REQUIRED_MODES = ("dense", "bm25", "hybrid", "hybrid+rerank")
ALL_MODES = (*REQUIRED_MODES, "dense+rerank", "bm25+rerank")
PIPELINE = "pipeline"  # the ranking the answers carry
RETRIEVAL_METRICS = ("ndcg_at_10", "recall_at_5", "recall_at_20", "mrr")


class ScoringOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How cases are judged, and the pipeline settings the judgement needs to know."""

    rule: m.PassRule = msgspec.field(default_factory=m.PassRule)
    sentence_support: float = 0.5
    top_k: int = 20
    search_mode: SearchMode = "hybrid"
    min_relevance: float = 0.7
    rerank_k: int = 5


class RunDescription(msgspec.Struct, frozen=True, kw_only=True):
    """What was asked of the pipeline in a run, as the summary records it."""

    golden: str
    tenant: str
    model: str | None = None
    strategy: str | None = None
    prompt_version: str | None = None
    use_cache: bool = True
    max_tokens: int | None = None
    concurrency: int = 4
    retrieval: bool = True


# --- what the pipeline said ------------------------------------------------------------------------------------


class AnswerRecord(msgspec.Struct, kw_only=True):
    """One request's answer as the client saw it, with client-observed timings (send to first text / to done)."""

    request_id: str
    text: str = ""
    citations: list[Citation] = msgspec.field(default_factory=list)
    finish_reason: str = ""
    error_code: str = ""
    error: str = ""
    cached: bool = False
    model: str = ""
    prompt_version: str = ""
    ttft_ms: float | None = None
    total_ms: float | None = None
    server_timings_ms: dict[str, float] = msgspec.field(default_factory=dict)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    retrieval: list[RankedPassage] = msgspec.field(default_factory=list)
    output_flags: list[str] = msgspec.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.error) and self.error_code != "blocked"

    @property
    def refused(self) -> bool:
        return not self.failed and m.is_refusal(self.finish_reason or None, self.text, self.error_code or None)

    @property
    def context(self) -> list[RankedPassage]:
        """The passages the prompt held, in source order ([1] first)."""
        return [p for p in self.retrieval if p.in_context]


# --- per case --------------------------------------------------------------------------------------------------


class Hit(msgspec.Struct, kw_only=True):
    chunk_id: str
    doc_id: str
    char_start: int
    char_end: int
    score: float
    relevant: bool


class ModeScores(msgspec.Struct, kw_only=True):
    recall_at_5: float | None = None
    recall_at_20: float | None = None
    mrr: float | None = None
    ndcg_at_10: float | None = None
    ms: float | None = None
    top: list[Hit] = msgspec.field(default_factory=list)


class SentenceCheck(msgspec.Struct, kw_only=True):
    sentence: str
    label: str
    source: int | None
    reason: str


class CaseScores(msgspec.Struct, kw_only=True):
    # Answered answerable cases with key facts only: every key fact stated, no sentence contradicted.
    correct: bool | None = None
    key_facts_found: list[str] = msgspec.field(default_factory=list)
    key_facts_missing: list[str] = msgspec.field(default_factory=list)
    contradicted_sentences: int = 0
    checked_sentences: int = 0
    # Of the (sentence, cited source) pairs, the share the source supports.
    citation_precision: float | None = None
    groundedness: float | None = None
    answer_relevance: float | None = None
    context_relevance: float | None = None
    answer_similarity: float | None = None
    answer_token_f1: float | None = None
    refusal_correct: bool = False
    citations_valid: bool = True
    citation_markers: int = 0
    unknown_citations: list[int] = msgspec.field(default_factory=list)
    citations_not_retrieved: list[int] = msgspec.field(default_factory=list)


class CaseRecord(msgspec.Struct, kw_only=True):
    id: str
    question: str
    tags: list[str]
    expect_refusal: bool
    key_facts: list[str]
    reference_answer: str
    passed: bool
    refused: bool
    error: str
    answer: AnswerRecord
    ttft_ms: float | None
    total_ms: float | None
    decode_tokens_per_s: float | None
    scores: CaseScores
    checks: list[SentenceCheck]
    retrieval: dict[str, ModeScores]


class Ranking(msgspec.Struct, kw_only=True):
    """Every compared mode's top-k for one question, and how long each search took (ms)."""

    ranked: dict[str, list[Passage]]
    ms: dict[str, float]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def mode_scores(case: GoldenCase, ranked: Sequence[Passage | RankedPassage], ms: float | None) -> ModeScores:
    """The case's retrieval scores for one ranking, and its top 10 each marked relevant or not."""
    passages = [_as_passage(p) for p in ranked]
    scores = m.retrieval_scores(passages, case.relevant)
    hits = m.match_ranks(passages, case.relevant)
    return ModeScores(
        recall_at_5=_round(scores.recall_at_5),
        recall_at_20=_round(scores.recall_at_20),
        mrr=_round(scores.mrr),
        ndcg_at_10=_round(scores.ndcg_at_10),
        ms=None if ms is None else round(ms, 2),
        top=[
            Hit(
                chunk_id=p.chunk_id,
                doc_id=p.doc_id,
                char_start=p.char_start,
                char_end=p.char_end,
                score=round(p.score, 4),
                relevant=bool(h),
            )
            for p, h in zip(passages[:10], hits[:10], strict=True)
        ],
    )


def _as_passage(p: Passage | RankedPassage) -> Passage:
    if isinstance(p, Passage):
        return p
    return Passage(
        chunk_id=p.chunk_id,
        doc_id=p.doc_id,
        text=p.text,
        score=p.score,
        source_uri=p.source_uri,
        char_start=p.char_start,
        char_end=p.char_end,
    )


def retrieval_record(case: GoldenCase, ranking: Ranking | None, answer: AnswerRecord | None) -> dict[str, ModeScores]:
    """Per mode: the case's retrieval scores; ``pipeline`` from the ranking the answer carried."""
    record: dict[str, ModeScores] = {}
    if ranking is not None:
        record = {mode: mode_scores(case, passages, ranking.ms.get(mode)) for mode, passages in ranking.ranked.items()}
    if answer is not None and answer.retrieval:
        record[PIPELINE] = mode_scores(case, answer.retrieval, answer.server_timings_ms.get("retrieve"))
    return record


def score_case(
    case: GoldenCase,
    answer: AnswerRecord,
    ranking: Ranking | None,
    vectors: Mapping[str, Any],
    options: ScoringOptions,
    checker: ClaimChecker,
) -> CaseRecord:
    """Every answer metric and the retrieval record of one case. ``vectors`` maps texts (the question, the
    reference, the answer without markers, the context passages) to embeddings."""
    context = answer.context
    sources = [p.text for p in context]
    answered = not answer.failed and not answer.refused
    clean = strip_citations(answer.text)
    q_vec, a_vec, r_vec = vectors.get(case.question), vectors.get(clean), vectors.get(case.reference_answer)
    checks = check_sentences(split_sentences(answer.text), sources, checker) if answered and sources else []
    contradicted = sum(1 for c in checks if c.label == "contradicted")
    cited_pairs = [c for c in checks if c.passage is not None and re.search(r"\[\d", c.sentence)]
    facts = key_facts(answer.text, case.key_facts, case.key_fact_alternatives)
    correct = None
    if answered and not case.expect_refusal and case.key_facts:
        correct = facts.complete and contradicted == 0
    cited = {c.number: (sources[c.number - 1] if 1 <= c.number <= len(sources) else "") for c in answer.citations}
    grounded = m.groundedness(answer.text, cited, sources, threshold=options.sentence_support) if answered else None
    citation = m.citation_validity(answer.text, answer.citations, [p.chunk_id for p in answer.retrieval])
    similarity = m.cosine(a_vec, r_vec) if answered and a_vec is not None and r_vec is not None else None
    if answered and r_vec is not None and a_vec is None:
        similarity = 0.0  # an empty answer to an answerable question
    context_vectors = [vectors[text] for text in sources if text in vectors]
    scores = CaseScores(
        correct=correct,
        key_facts_found=facts.found,
        key_facts_missing=facts.missing,
        contradicted_sentences=contradicted,
        checked_sentences=len(checks),
        citation_precision=(
            _round(sum(1 for c in cited_pairs if c.label == "supported") / len(cited_pairs)) if cited_pairs else None
        ),
        groundedness=_round(grounded),
        answer_relevance=_round(m.cosine(q_vec, a_vec))
        if answered and q_vec is not None and a_vec is not None
        else None,
        context_relevance=_round(m.mean_cosine(q_vec, context_vectors)) if q_vec is not None else None,
        answer_similarity=_round(similarity),
        answer_token_f1=_round(m.token_f1(answer.text, case.reference_answer)) if answered else None,
        refusal_correct=answer.refused == case.expect_refusal,
        citations_valid=citation.valid,
        citation_markers=citation.markers,
        unknown_citations=citation.unknown,
        citations_not_retrieved=citation.not_retrieved,
    )
    passed = m.case_passes(
        expect_refusal=case.expect_refusal,
        refused=answer.refused,
        error=answer.failed,
        grounded=grounded,
        similarity=similarity,
        citations_valid=citation.valid,
        rule=options.rule,
    )
    if correct is not None:
        passed = passed and correct
    return CaseRecord(
        id=case.id,
        question=case.question,
        tags=case.tags,
        expect_refusal=case.expect_refusal,
        key_facts=case.key_facts,
        reference_answer=case.reference_answer,
        passed=passed,
        refused=answer.refused,
        error=answer.error if answer.failed else "",
        answer=answer,
        ttft_ms=_round(answer.ttft_ms, 2),
        total_ms=_round(answer.total_ms, 2),
        decode_tokens_per_s=_round(m.decode_tokens_per_s(answer.completion_tokens, answer.server_timings_ms), 2),
        scores=scores,
        checks=[SentenceCheck(sentence=c.sentence, label=c.label, source=c.passage, reason=c.reason) for c in checks],
        retrieval=retrieval_record(case, ranking, answer),
    )


# --- the run ---------------------------------------------------------------------------------------------------


class Percentiles(msgspec.Struct, kw_only=True):
    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


def percentiles(values: Sequence[float]) -> Percentiles:
    return Percentiles(
        n=len(values),
        p50=m.percentile(values, 50),
        p95=m.percentile(values, 95),
        p99=m.percentile(values, 99),
        mean=m.mean_of(values),
    )


class Quality(msgspec.Struct, kw_only=True):
    # The measures: among answered answerable cases with key facts, the share correct; the share of
    # answerable cases answered; cited pairs supported; unanswerable cases refused; answerable cases refused.
    correctness: float | None = None
    answered_coverage: float | None = None
    citation_precision: float | None = None
    refusal_accuracy: float | None = None
    false_refusal_rate: float | None = None
    contradiction_rate: float | None = None
    key_fact_recall: float | None = None
    pass_rate: float | None = None
    refusal_correctness: float | None = None
    citation_validity: float | None = None
    cited_share: float | None = None
    groundedness: float | None = None
    answer_similarity: float | None = None
    answer_token_f1: float | None = None
    answer_relevance: float | None = None
    context_relevance: float | None = None
    error_rate: float | None = None
    cached_share: float | None = None


class TagSummary(msgspec.Struct, kw_only=True):
    cases: int
    pass_rate: float | None
    correctness: float | None


class ModeSummary(msgspec.Struct, kw_only=True):
    ndcg_at_10: float | None = None
    recall_at_5: float | None = None
    recall_at_20: float | None = None
    mrr: float | None = None
    latency_ms_p50: float | None = None
    cases: int = 0


class ScoreRange(msgspec.Struct, kw_only=True):
    """Three points of a distribution: for answerable questions min / p10 / median, for out-of-corpus ones
    median / p90 / max (the ends that matter for a threshold between them)."""

    low: float | None
    middle: float | None
    high: float | None


class RefusalGate(msgspec.Struct, kw_only=True):
    """How well the best reranker score separates answerable from out-of-corpus questions."""

    mode: str
    min_relevance: float
    accuracy_at_min_relevance: float | None
    answerable_top_score: ScoreRange  # min, p10, median
    out_of_corpus_top_score: ScoreRange  # median, p90, max
    best_threshold: float | None
    best_accuracy: float | None


class RetrievalVerdict(msgspec.Struct, kw_only=True):
    verdict: str
    hybrid_rerank_beats_both: bool | None
    margin_vs_dense: float | None = None
    margin_vs_bm25: float | None = None
    best_mode: str | None = None
    recommended_search_mode: str | None = None
    recommendation: str = ""


class RetrievalSummary(msgspec.Struct, kw_only=True):
    kind: str = "retrieval"
    title: str = "Retrieval comparison"
    cases: int
    top_k: int
    pipeline_mode: str
    modes: dict[str, ModeSummary]
    verdict: RetrievalVerdict
    refusal_gate: RefusalGate | None = None


class EvalSummary(msgspec.Struct, kw_only=True):
    kind: str = "eval"
    title: str = "Evaluation (golden set through the real pipeline)"
    run_id: str
    golden: str
    tenant: str
    model: str
    strategy: str | None
    prompt_version: str | None
    use_cache: bool
    max_tokens: int | None
    cases: int
    answerable: int
    refusal_expected: int
    with_key_facts: int
    duration_s: float
    concurrency: int
    checker: str
    thresholds: dict[str, float]
    quality: Quality
    refusals: dict[str, int]
    latency_ms: dict[str, Percentiles]
    decode_tokens_per_s: Percentiles
    by_tag: dict[str, TagSummary]
    distributions: dict[str, list[float]]
    retrieval: RetrievalSummary | None


def _share(rows: Sequence[CaseRecord], pred: Callable[[CaseRecord], bool]) -> float | None:
    return _round(sum(1 for r in rows if pred(r)) / len(rows)) if rows else None


def _mean(values: Iterable[float | None]) -> float | None:
    return _round(m.mean_of(values))


def quality_of(records: Sequence[CaseRecord]) -> Quality:
    """The answer-quality figures of these scored cases (a run, or any part of one such as a golden set's half)."""
    ok = [r for r in records if not r.error]
    answerable = [r for r in records if not r.expect_refusal]
    expected = [r for r in records if r.expect_refusal]
    answered = [r for r in ok if not r.refused]
    answered_ok = [r for r in answered if not r.expect_refusal]
    judged = [r for r in answered_ok if r.scores.correct is not None]
    fact_counts = [(len(r.scores.key_facts_found), len(r.key_facts)) for r in answered_ok if r.key_facts]
    total_facts = sum(t for _, t in fact_counts)
    return Quality(
        correctness=_share(judged, lambda r: bool(r.scores.correct)),
        answered_coverage=_share(answerable, lambda r: not r.refused and not r.error),
        citation_precision=_mean(r.scores.citation_precision for r in answered),
        refusal_accuracy=_share([r for r in expected if not r.error], lambda r: r.refused),
        false_refusal_rate=_share([r for r in answerable if not r.error], lambda r: r.refused),
        contradiction_rate=_share(
            [r for r in answered if r.scores.checked_sentences], lambda r: r.scores.contradicted_sentences > 0
        ),
        key_fact_recall=_round(sum(f for f, _ in fact_counts) / total_facts) if total_facts else None,
        pass_rate=_share(records, lambda r: r.passed),
        refusal_correctness=_share(ok, lambda r: r.scores.refusal_correct),
        citation_validity=_share(answered, lambda r: r.scores.citations_valid),
        cited_share=_share(answered, lambda r: r.scores.citation_markers > 0),
        groundedness=_mean(r.scores.groundedness for r in answered_ok),
        answer_similarity=_mean(r.scores.answer_similarity for r in answered_ok),
        answer_token_f1=_mean(r.scores.answer_token_f1 for r in answered_ok),
        answer_relevance=_mean(r.scores.answer_relevance for r in answered_ok),
        context_relevance=_mean(r.scores.context_relevance for r in records),
        error_rate=_share(records, lambda r: bool(r.error)),
        cached_share=_share(ok, lambda r: r.answer.cached),
    )


def summarize(
    run: RunDescription,
    options: ScoringOptions,
    records: Sequence[CaseRecord],
    run_id: str,
    seconds: float,
    *,
    checker: str = "",
) -> EvalSummary:
    ok = [r for r in records if not r.error]
    answerable = [r for r in records if not r.expect_refusal]
    expected = [r for r in records if r.expect_refusal]
    answered_ok = [r for r in ok if not r.refused and not r.expect_refusal]
    with_facts = [r for r in answerable if r.key_facts]
    quality = quality_of(records)
    refusals = {
        "refusal expected, refused": sum(1 for r in expected if r.refused),
        "refusal expected, answered (missed refusal)": sum(1 for r in expected if not r.refused and not r.error),
        "answerable, refused (false refusal)": sum(1 for r in answerable if r.refused),
        "answerable, answered": sum(1 for r in answerable if not r.refused and not r.error),
        "errors (no answer)": len(records) - len(ok),
    }
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    total = [r.total_ms for r in ok if r.total_ms is not None]
    decode = [r.decode_tokens_per_s for r in ok if r.decode_tokens_per_s is not None]
    tags: dict[str, list[CaseRecord]] = defaultdict(list)
    for r in records:
        for tag in r.tags or ["untagged"]:
            tags[tag].append(r)
    models = sorted({r.answer.model for r in ok if r.answer.model})
    distributions: dict[str, list[float]] = {
        "groundedness": [v for r in answered_ok if (v := r.scores.groundedness) is not None],
        "answer_similarity": [v for r in answered_ok if (v := r.scores.answer_similarity) is not None],
        "answer_relevance": [v for r in answered_ok if (v := r.scores.answer_relevance) is not None],
        "context_relevance": [v for r in records if (v := r.scores.context_relevance) is not None],
        "ttft_ms": ttft,
        "total_ms": total,
    }
    return EvalSummary(
        run_id=run_id,
        golden=run.golden,
        tenant=run.tenant,
        model=run.model or ", ".join(models),
        strategy=run.strategy,
        prompt_version=run.prompt_version,
        use_cache=run.use_cache,
        max_tokens=run.max_tokens,
        cases=len(records),
        answerable=len(answerable),
        refusal_expected=len(expected),
        with_key_facts=len(with_facts),
        duration_s=round(seconds, 2),
        concurrency=run.concurrency,
        checker=checker,
        thresholds={
            "groundedness": options.rule.groundedness,
            "similarity": options.rule.similarity,
            "sentence_support": options.sentence_support,
        },
        quality=quality,
        refusals=refusals,
        latency_ms={"ttft": percentiles(ttft), "total": percentiles(total)},
        decode_tokens_per_s=percentiles(decode),
        by_tag={
            tag: TagSummary(
                cases=len(rows),
                pass_rate=_share(rows, lambda r: r.passed),
                correctness=_share([r for r in rows if r.scores.correct is not None], lambda r: bool(r.scores.correct)),
            )
            for tag, rows in tags.items()
        },
        distributions=distributions,
        retrieval=summarize_retrieval(records, options),  # without the other modes: the pipeline's alone
    )


def summarize_retrieval(records: Sequence[CaseRecord], options: ScoringOptions) -> RetrievalSummary:
    """Mean metrics per mode over the cases with known relevance, and the verdict on the modes."""
    judged = [r for r in records if any(v.ndcg_at_10 is not None for v in r.retrieval.values())]
    modes: dict[str, ModeSummary] = {}
    for mode in (PIPELINE, *ALL_MODES):
        rows = [r.retrieval[mode] for r in judged if mode in r.retrieval]
        if not rows:
            continue
        modes[mode] = ModeSummary(
            ndcg_at_10=_mean(row.ndcg_at_10 for row in rows),
            recall_at_5=_mean(row.recall_at_5 for row in rows),
            recall_at_20=_mean(row.recall_at_20 for row in rows),
            mrr=_mean(row.mrr for row in rows),
            latency_ms_p50=_round(m.percentile([row.ms for row in rows if row.ms is not None], 50), 1),
            cases=sum(1 for row in rows if row.ndcg_at_10 is not None),
        )
    return RetrievalSummary(
        cases=len(judged),
        top_k=options.top_k,
        pipeline_mode=options.search_mode,
        modes=modes,
        verdict=retrieval_verdict({k: msgspec.structs.asdict(v) for k, v in modes.items()}, options.search_mode),
        refusal_gate=refusal_gate(records, f"{options.search_mode}+rerank", options.min_relevance),
    )


def summarize_rankings(
    options: ScoringOptions, cases: Sequence[GoldenCase], rankings: Mapping[str, Ranking]
) -> RetrievalSummary:
    """The retrieval comparison from rankings alone (no answers), for cases beyond the answered sample."""
    records = [
        CaseRecord(
            id=case.id,
            question=case.question,
            tags=case.tags,
            expect_refusal=case.expect_refusal,
            key_facts=[],
            reference_answer="",
            passed=False,
            refused=False,
            error="",
            answer=AnswerRecord(request_id=""),
            ttft_ms=None,
            total_ms=None,
            decode_tokens_per_s=None,
            scores=CaseScores(),
            checks=[],
            retrieval=retrieval_record(case, rankings.get(case.id), None),
        )
        for case in cases
    ]
    return summarize_retrieval(records, options)


def refusal_gate(records: Sequence[CaseRecord], mode: str, current: float) -> RefusalGate | None:
    """The pipeline refuses without a model call when the best reranker score is below ``min_relevance``: how
    well does that separate answerable from out-of-corpus questions, and which threshold would separate best?"""
    tops: dict[bool, list[float]] = {True: [], False: []}
    for r in records:
        ranked = r.retrieval.get(mode) or r.retrieval.get(PIPELINE)  # the answer's own ranking is that mode's
        top = ranked.top if ranked is not None else []
        tops[r.expect_refusal].append(float(top[0].score) if top else float("-inf"))
    answerable, refusals = tops[False], tops[True]
    if not answerable or not refusals:
        return None
    best = m.best_threshold(answerable, refusals)
    finite = [x for x in answerable + refusals if x != float("-inf")]
    return RefusalGate(
        mode=mode,
        min_relevance=current,
        accuracy_at_min_relevance=_round(m.threshold_accuracy(answerable, refusals, current)),
        answerable_top_score=ScoreRange(
            low=_round(min(answerable)),
            middle=_round(m.percentile(answerable, 10)),
            high=_round(m.percentile(answerable, 50)),
        ),
        out_of_corpus_top_score=ScoreRange(
            low=_round(m.percentile(refusals, 50)),
            middle=_round(m.percentile(refusals, 90)),
            high=_round(max(refusals)),
        ),
        best_threshold=_round(best[0]) if best and finite else None,
        best_accuracy=_round(best[1]) if best else None,
    )


def retrieval_verdict(modes: Mapping[str, Mapping[str, Any]], pipeline_mode: str) -> RetrievalVerdict:
    """Does hybrid+rerank beat dense-only and BM25-only on nDCG@10? If not, by how much, and what to default to."""
    score = {mode: v.get("ndcg_at_10") for mode, v in modes.items() if mode != PIPELINE}
    hr, dense, bm25 = score.get("hybrid+rerank"), score.get("dense"), score.get("bm25")
    if hr is None or dense is None or bm25 is None:
        return RetrievalVerdict(
            verdict="not enough judged cases to compare retrieval modes", hybrid_rerank_beats_both=None
        )
    beats = hr > dense and hr > bm25
    if beats:
        verdict = (
            f"hybrid+rerank nDCG@10 {hr:.3f} beats dense-only {dense:.3f} (by {hr - dense:+.3f}) and "
            f"BM25-only {bm25:.3f} (by {hr - bm25:+.3f})."
        )
    else:
        verdict = (
            f"hybrid+rerank nDCG@10 {hr:.3f} does NOT beat both: dense-only {dense:.3f} "
            f"(difference {hr - dense:+.3f}), BM25-only {bm25:.3f} (difference {hr - bm25:+.3f})."
        )
    current = f"{pipeline_mode}+rerank"
    reranked = {mode: s for mode, s in score.items() if mode.endswith("+rerank") and s is not None}
    # ties go to the current default: change it only for a measured gain
    best_reranked = max(reranked, key=lambda k: (reranked[k], k == current)) if reranked else current
    best_score = reranked.get(best_reranked, 0.0)
    unranked = {mode: s for mode, s in score.items() if not mode.endswith("+rerank") and s is not None}
    best_plain = max(unranked, key=lambda k: unranked[k]) if unranked else None
    base_mode = best_reranked.removesuffix("+rerank")
    if base_mode == pipeline_mode:
        recommendation = (
            f"keep the default search_mode={pipeline_mode} (the pipeline always reranks): no reranked mode scores "
            f"higher on nDCG@10 than {current} ({best_score:.3f})."
        )
    else:
        recommendation = (
            f"the pipeline always reranks, and {best_reranked} has the best nDCG@10 of the reranked modes "
            f"({best_score:.3f} vs {score.get(current) or 0.0:.3f} for the current {current}): "
            f"set RAGSTREAM_SEARCH_MODE={base_mode}."
        )
    if best_plain is not None and unranked[best_plain] > best_score:
        recommendation += (
            f" {best_plain} without reranking scores higher still ({unranked[best_plain]:.3f}): the reranker lowers "
            "ranking quality on this set; the pipeline also uses its score for the refusal threshold, so dropping "
            "it is a design change, not a setting."
        )
    return RetrievalVerdict(
        verdict=verdict,
        hybrid_rerank_beats_both=beats,
        margin_vs_dense=_round(hr - dense),
        margin_vs_bm25=_round(hr - bm25),
        best_mode=best_plain if best_plain and unranked[best_plain] > best_score else best_reranked,
        recommended_search_mode=base_mode,
        recommendation=recommendation,
    )


# --- selecting and naming ---------------------------------------------------------------------------------------


def select_cases(cases: Sequence[GoldenCase], limit: int | None) -> list[GoldenCase]:
    """``limit`` cases spread evenly over the file, answerable and refusal cases in their original proportion."""
    if limit is None or limit >= len(cases):
        return list(cases)
    answerable = [c for c in cases if not c.expect_refusal]
    refusals = [c for c in cases if c.expect_refusal]
    n_ref = round(limit * len(refusals) / len(cases))
    if refusals and answerable and limit >= 2:
        n_ref = min(max(1, n_ref), limit - 1)
    n_ans = limit - n_ref

    def spread(items: list[GoldenCase], n: int) -> list[GoldenCase]:
        if n <= 0 or not items:
            return []
        return [items[int(i * len(items) / n)] for i in range(min(n, len(items)))]

    return spread(answerable, n_ans) + spread(refusals, n_ref)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:150] or "case"
