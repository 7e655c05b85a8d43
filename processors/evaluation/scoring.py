"""Scoring an evaluation run, as pure functions: what the pipeline answered and what retrieval returned go in,
per-case records and the run's summary come out. No Kafka, no models: embeddings arrive as vectors.
``streams.clients.evaluation`` gathers the inputs over the real services and calls these.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from processors.citations import strip_citations
from processors.evaluation import metrics as m
from processors.evaluation.golden import GoldenCase
from processors.protocols import SearchMode
from schemas.events import Citation, Passage

REQUIRED_MODES = ("dense", "bm25", "hybrid", "hybrid+rerank")
ALL_MODES = (*REQUIRED_MODES, "dense+rerank", "bm25+rerank")


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
    prompt_version: str | None = None
    use_cache: bool = True
    max_tokens: int | None = None
    concurrency: int = 4
    retrieval: bool = True


@dataclass
class Answer:
    """What the pipeline said to one request, with client-observed timings (send to first text / to done)."""

    request_id: str
    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    finish_reason: str = ""
    error_code: str = ""
    error: str = ""
    cached: bool = False
    model: str = ""
    prompt_version: str = ""
    ttft_ms: float | None = None
    total_ms: float | None = None
    server_timings_ms: dict[str, float] = field(default_factory=dict)
    completion_tokens: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.error) and self.error_code != "blocked"

    @property
    def refused(self) -> bool:
        return not self.failed and m.is_refusal(self.finish_reason or None, self.text, self.error_code or None)


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


def _latency(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": m.percentile(values, 50),
        "p95": m.percentile(values, 95),
        "p99": m.percentile(values, 99),
        "mean": m.mean_of(values),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _passage_brief(p: Passage, relevant_hit: bool) -> dict[str, Any]:
    return {
        "chunk_id": p.chunk_id,
        "doc_id": p.doc_id,
        "char_start": p.char_start,
        "char_end": p.char_end,
        "score": round(p.score, 4),
        "relevant": relevant_hit,
    }


def retrieval_record(case: GoldenCase, ranking: dict[str, Any] | None) -> dict[str, Any]:
    """Per mode: the case's retrieval scores, search time and top 10 (each marked relevant or not)."""
    record: dict[str, Any] = {}
    for mode, passages in (ranking or {}).get("ranked", {}).items():
        scores = m.retrieval_scores(passages, case.relevant)
        hits = m.match_ranks(passages, case.relevant)
        record[mode] = {
            **{k: _round(v) for k, v in msgspec.structs.asdict(_as_struct(scores)).items()},
            "ms": round(ranking["ms"][mode], 2) if ranking else None,
            "top": [_passage_brief(p, bool(h)) for p, h in zip(passages[:10], hits[:10], strict=True)],
        }
    return record


def summarize_rankings(
    options: ScoringOptions, cases: Sequence[GoldenCase], rankings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The retrieval comparison from rankings alone (no answers), for cases beyond the answered sample."""
    records = [
        {"retrieval": retrieval_record(case, rankings.get(case.id)), "expect_refusal": case.expect_refusal}
        for case in cases
    ]
    return summarize_retrieval(records, options)


def score_case(
    case: GoldenCase,
    answer: Answer,
    ranking: dict[str, Any] | None,
    context: Sequence[Passage],
    known_texts: Mapping[str, str],
    vectors: Mapping[str, Any],
    options: ScoringOptions,
) -> dict[str, Any]:
    """Every answer metric and the retrieval record of one case: ``context`` is what the model saw, ``known_texts``
    maps chunk ids to text (for cited chunks), ``vectors`` maps texts to embeddings."""
    ranked: dict[str, list[Passage]] = (ranking or {}).get("ranked", {})
    retrieval = retrieval_record(case, ranking)
    ctx = list(context)
    answered = not answer.failed and not answer.refused
    clean = strip_citations(answer.text)
    q_vec = vectors.get(case.question)
    a_vec = vectors.get(clean)
    r_vec = vectors.get(case.reference_answer)
    cited = {c.number: known_texts.get(c.chunk_id, "") for c in answer.citations}
    grounded = (
        m.groundedness(answer.text, cited, [p.text for p in ctx], threshold=options.sentence_support)
        if answered
        else None
    )
    retrieved_ids = {p.chunk_id for p in ranked.get(options.search_mode, [])}
    citation = m.citation_validity(answer.text, answer.citations, retrieved_ids)
    similarity = m.cosine(a_vec, r_vec) if answered and a_vec is not None and r_vec is not None else None
    if answered and r_vec is not None and a_vec is None:
        similarity = 0.0  # an empty answer to an answerable question
    relevance = m.cosine(q_vec, a_vec) if answered and q_vec is not None and a_vec is not None else None
    ctx_vecs = [vectors[p.text] for p in ctx if p.text in vectors]
    context_relevance = m.mean_cosine(q_vec, ctx_vecs) if q_vec is not None else None
    f1 = m.token_f1(answer.text, case.reference_answer) if answered else None
    passed = m.case_passes(
        expect_refusal=case.expect_refusal,
        refused=answer.refused,
        error=answer.failed,
        grounded=grounded,
        similarity=similarity,
        citations_valid=citation.valid,
        rule=options.rule,
    )
    return {
        "id": case.id,
        "question": case.question,
        "tags": case.tags,
        "expect_refusal": case.expect_refusal,
        "passed": passed,
        "refused": answer.refused,
        "error": answer.error if answer.failed else "",
        "answer": {
            "request_id": answer.request_id,
            "error_code": answer.error_code,
            "message": answer.error,
            "text": answer.text,
            "finish_reason": answer.finish_reason,
            "cached": answer.cached,
            "model": answer.model,
            "prompt_version": answer.prompt_version,
            "citations": [msgspec.to_builtins(c) for c in answer.citations],
            "server_timings_ms": answer.server_timings_ms,
        },
        "latency_ms": {"ttft": _round(answer.ttft_ms, 2), "total": _round(answer.total_ms, 2)},
        "decode_tokens_per_s": _round(m.decode_tokens_per_s(answer.completion_tokens, answer.server_timings_ms), 2),
        "scores": {
            "groundedness": _round(grounded),
            "answer_relevance": _round(relevance),
            "context_relevance": _round(context_relevance),
            "answer_similarity": _round(similarity),
            "answer_token_f1": _round(f1),
            "refusal_correct": answer.refused == case.expect_refusal,
            "citations_valid": citation.valid,
            "citation_markers": citation.markers,
            "unknown_citations": citation.unknown,
            "citations_not_retrieved": citation.not_retrieved,
        },
        "retrieval": retrieval,
        "reference_answer": case.reference_answer,
    }


class _Scores(msgspec.Struct):
    recall_at_5: float | None
    recall_at_20: float | None
    mrr: float | None
    ndcg_at_10: float | None


def _as_struct(scores: m.RetrievalScores) -> _Scores:
    return _Scores(scores.recall_at_5, scores.recall_at_20, scores.mrr, scores.ndcg_at_10)


def summarize_retrieval(records: Sequence[dict[str, Any]], options: ScoringOptions) -> dict[str, Any]:
    """Mean metrics per mode over the cases with known relevance, and the verdict the issue asks for."""
    judged = [r for r in records if r["retrieval"] and r["retrieval"].get("hybrid", {}).get("ndcg_at_10") is not None]
    modes: dict[str, dict[str, Any]] = {}
    for mode in ALL_MODES:
        rows = [r["retrieval"][mode] for r in judged if mode in r["retrieval"]]
        if not rows:
            continue
        modes[mode] = {
            k: _round(m.mean_of(row[k] for row in rows)) for k in ("ndcg_at_10", "recall_at_5", "recall_at_20", "mrr")
        }
        modes[mode]["latency_ms_p50"] = _round(m.percentile([row["ms"] for row in rows], 50), 1)
    summary: dict[str, Any] = {
        "kind": "retrieval",
        "title": "Retrieval comparison",
        "cases": len(judged),
        "top_k": options.top_k,
        "pipeline_mode": options.search_mode,
        "modes": modes,
    }
    summary.update(retrieval_verdict(modes, options.search_mode))
    summary["refusal_gate"] = refusal_gate(records, f"{options.search_mode}+rerank", options.min_relevance)
    return summary


def refusal_gate(records: Sequence[dict[str, Any]], mode: str, current: float) -> dict[str, Any] | None:
    """The pipeline refuses without a model call when the best reranker score is below ``min_relevance``: how
    well does that separate answerable from out-of-corpus questions, and which threshold would separate best?"""
    tops: dict[bool, list[float]] = {True: [], False: []}
    for r in records:
        top = r["retrieval"].get(mode, {}).get("top") or []
        tops[bool(r["expect_refusal"])].append(float(top[0]["score"]) if top else float("-inf"))
    answerable, refusals = tops[False], tops[True]
    if not answerable or not refusals:
        return None
    best = m.best_threshold(answerable, refusals)
    finite = [x for x in answerable + refusals if x != float("-inf")]
    return {
        "mode": mode,
        "min_relevance": current,
        "accuracy_at_min_relevance": _round(m.threshold_accuracy(answerable, refusals, current)),
        "answerable_top_score": {
            "min": _round(min(answerable)),
            "p10": _round(m.percentile(answerable, 10)),
            "median": _round(m.percentile(answerable, 50)),
        },
        "out_of_corpus_top_score": {
            "median": _round(m.percentile(refusals, 50)),
            "p90": _round(m.percentile(refusals, 90)),
            "max": _round(max(refusals)),
        },
        "best_threshold": _round(best[0]) if best and finite else None,
        "best_accuracy": _round(best[1]) if best else None,
    }


def retrieval_verdict(modes: dict[str, dict[str, Any]], pipeline_mode: str) -> dict[str, Any]:
    """Does hybrid+rerank beat dense-only and BM25-only on nDCG@10? If not, by how much, and what to default to."""
    score = {mode: v.get("ndcg_at_10") for mode, v in modes.items()}
    hr, dense, bm25 = score.get("hybrid+rerank"), score.get("dense"), score.get("bm25")
    if hr is None or dense is None or bm25 is None:
        return {"verdict": "not enough judged cases to compare retrieval modes", "hybrid_rerank_beats_both": None}
    beats = hr > dense and hr > bm25
    out: dict[str, Any] = {
        "hybrid_rerank_beats_both": beats,
        "margin_vs_dense": _round(hr - dense),
        "margin_vs_bm25": _round(hr - bm25),
    }
    if beats:
        out["verdict"] = (
            f"hybrid+rerank nDCG@10 {hr:.3f} beats dense-only {dense:.3f} (by {hr - dense:+.3f}) and "
            f"BM25-only {bm25:.3f} (by {hr - bm25:+.3f})."
        )
    else:
        out["verdict"] = (
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
    out["best_mode"] = best_plain if best_plain and unranked[best_plain] > best_score else best_reranked
    out["recommended_search_mode"] = base_mode
    if base_mode == pipeline_mode:
        out["recommendation"] = (
            f"keep the default search_mode={pipeline_mode} (the pipeline always reranks): no reranked mode scores "
            f"higher on nDCG@10 than {current} ({best_score:.3f})."
        )
    else:
        out["recommendation"] = (
            f"the pipeline always reranks, and {best_reranked} has the best nDCG@10 of the reranked modes "
            f"({best_score:.3f} vs {score.get(current) or 0.0:.3f} for the current {current}): "
            f"set RAGSTREAM_SEARCH_MODE={base_mode}."
        )
    if best_plain is not None and unranked[best_plain] > best_score:
        out["recommendation"] += (
            f" {best_plain} without reranking scores higher still ({unranked[best_plain]:.3f}): the reranker lowers "
            "ranking quality on this set; the pipeline also uses its score for the refusal threshold, so dropping "
            "it is a design change, not a setting."
        )
    return out


def summarize(
    run: RunDescription, options: ScoringOptions, records: Sequence[dict[str, Any]], run_id: str, seconds: float
) -> dict[str, Any]:
    ok = [r for r in records if not r["error"]]
    answerable = [r for r in records if not r["expect_refusal"]]
    expected = [r for r in records if r["expect_refusal"]]
    answered = [r for r in ok if not r["refused"]]

    def share(rows: Sequence[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]) -> float | None:
        return _round(sum(1 for r in rows if pred(r)) / len(rows)) if rows else None

    def mean_score(key: str, rows: Sequence[dict[str, Any]]) -> float | None:
        return _round(m.mean_of(r["scores"][key] for r in rows))

    answered_ok = [r for r in answered if not r["expect_refusal"]]
    quality = {
        "pass_rate": share(records, lambda r: r["passed"]),
        "refusal_correctness": share(ok, lambda r: r["scores"]["refusal_correct"]),
        "citation_validity": share(answered, lambda r: r["scores"]["citations_valid"]),
        "cited_share": share(answered, lambda r: r["scores"]["citation_markers"] > 0),
        "groundedness": mean_score("groundedness", answered_ok),
        "answer_similarity": mean_score("answer_similarity", answered_ok),
        "answer_token_f1": mean_score("answer_token_f1", answered_ok),
        "answer_relevance": mean_score("answer_relevance", answered_ok),
        "context_relevance": mean_score("context_relevance", records),
        "error_rate": share(records, lambda r: bool(r["error"])),
        "cached_share": share(ok, lambda r: r["answer"]["cached"]),
    }
    refusals = {
        "refusal expected, refused": sum(1 for r in expected if r["refused"]),
        "refusal expected, answered (missed refusal)": sum(1 for r in expected if not r["refused"] and not r["error"]),
        "answerable, refused (false refusal)": sum(1 for r in answerable if r["refused"]),
        "answerable, answered": sum(1 for r in answerable if not r["refused"] and not r["error"]),
        "errors (no answer)": len(records) - len(ok),
    }
    ttft = [r["latency_ms"]["ttft"] for r in ok if r["latency_ms"]["ttft"] is not None]
    total = [r["latency_ms"]["total"] for r in ok if r["latency_ms"]["total"] is not None]
    decode = [r["decode_tokens_per_s"] for r in ok if r.get("decode_tokens_per_s") is not None]
    tags: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        for tag in r["tags"] or ["untagged"]:
            tags[tag].append(r)
    models = sorted({r["answer"]["model"] for r in ok if r["answer"]["model"]})
    return {
        "kind": "eval",
        "title": "Evaluation (golden set through the real pipeline)",
        "run_id": run_id,
        "golden": run.golden,
        "tenant": run.tenant,
        "model": run.model or ", ".join(models),
        "prompt_version": run.prompt_version,
        "use_cache": run.use_cache,
        "max_tokens": run.max_tokens,
        "cases": len(records),
        "answerable": len(answerable),
        "refusal_expected": len(expected),
        "duration_s": round(seconds, 2),
        "concurrency": run.concurrency,
        "thresholds": {
            "groundedness": options.rule.groundedness,
            "similarity": options.rule.similarity,
            "sentence_support": options.sentence_support,
        },
        "quality": quality,
        "refusals": refusals,
        "latency_ms": {"ttft": _latency(ttft), "total": _latency(total)},
        "decode_tokens_per_s": _latency(decode),
        "by_tag": {
            tag: {"cases": len(rows), "pass_rate": share(rows, lambda r: r["passed"])} for tag, rows in tags.items()
        },
        "distributions": {
            key: [r["scores"][key] for r in answered_ok if r["scores"][key] is not None]
            for key in ("groundedness", "answer_similarity", "answer_relevance")
        }
        | {
            "context_relevance": [
                r["scores"]["context_relevance"] for r in records if r["scores"]["context_relevance"] is not None
            ],
            "ttft_ms": ttft,
            "total_ms": total,
        },
        "retrieval": summarize_retrieval(records, options) if run.retrieval else None,
    }
