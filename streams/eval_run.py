"""``ragstream eval``: run a golden set through the real pipeline over Kafka, score it, and write the report.

Routing: each case is published on ``eval_cases`` (an :class:`~schemas.events.EvalCaseEvent` keyed
``run_id/case_id`` that records exactly what was asked), and its :class:`~schemas.events.QueryRequest` goes to the
ordinary ``queries`` topic with ``reply_to`` = ``eval_results`` and ``session_id`` = ``eval:<run_id>``, so the
worker treats it like any client request while replay can tell evaluation traffic from real traffic. Answers come
back on ``eval_results`` keyed by request id, and each scored case is published there too
(:class:`~schemas.events.EvalCaseResult`, keyed ``run_id/case_id``).

The retrieval comparison (dense, BM25, hybrid, hybrid+rerank, plus dense/BM25+rerank) calls Milvus and the Triton
reranker directly, because the pipeline runs one mode; it runs after the pipeline pass so it does not disturb the
latencies measured there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from infra.settings import REPO_ROOT, Settings
from processors.embedder import TritonEmbedder, Vectors
from processors.evaluation import metrics as m
from processors.evaluation.golden import GoldenCase, load_golden
from processors.evaluation.report import load_average, run_facts, write_run
from processors.ingest.index import MilvusIndex, SearchMode, collection_name, literal
from processors.reranker import TritonReranker
from processors.triton_client import TritonClient
from schemas.codec import encode
from schemas.events import (
    AnswerDone,
    AnswerError,
    Citation,
    EvalCaseEvent,
    EvalCaseResult,
    Passage,
    QueryOptions,
    QueryRequest,
    ReplyTo,
    TokenDelta,
    new_id,
)
from streams.client import KafkaAsker
from streams.topics import topic_name

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "eval"
REQUIRED_MODES = ("dense", "bm25", "hybrid", "hybrid+rerank")
ALL_MODES = (*REQUIRED_MODES, "dense+rerank", "bm25+rerank")

Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- talking to the pipeline -----------------------------------------------------------------------------------


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


class EvalAsker(KafkaAsker):
    """A :class:`KafkaAsker` that sends prepared requests (session id, deadline) and publishes eval events."""

    async def __aenter__(self) -> EvalAsker:
        await super().__aenter__()
        return self

    async def send_request(self, request: QueryRequest) -> None:
        self._queues[request.request_id] = asyncio.Queue()
        await self._producer.send_and_wait(
            topic_name("queries", self.settings), encode(request), key=request.request_id.encode()
        )

    async def publish(self, topic_key: str, key: str, event: msgspec.Struct) -> None:
        await self._producer.send_and_wait(topic_name(topic_key, self.settings), encode(event), key=key.encode())

    async def ask(self, request: QueryRequest, *, timeout_s: float) -> Answer:
        """Send ``request`` and collect its answer events until done, error or ``timeout_s`` of silence."""
        answer = Answer(request_id=request.request_id)
        started = time.perf_counter()
        await self.send_request(request)
        try:
            async for event in self.events(request.request_id, timeout_s=timeout_s):
                elapsed = (time.perf_counter() - started) * 1000.0
                if isinstance(event, TokenDelta) and event.text and answer.ttft_ms is None:
                    answer.ttft_ms = elapsed
                elif isinstance(event, AnswerDone):
                    answer.total_ms = elapsed
                    answer.text = event.text
                    answer.citations = list(event.citations)
                    answer.finish_reason = event.finish_reason
                    answer.cached = event.cached
                    answer.model = event.model
                    answer.prompt_version = event.prompt_ref.version if event.prompt_ref else ""
                    answer.server_timings_ms = dict(event.timings_ms)
                    answer.completion_tokens = event.usage.completion_tokens
                    if answer.ttft_ms is None:
                        answer.ttft_ms = elapsed
                elif isinstance(event, AnswerError):
                    answer.total_ms = elapsed
                    answer.error_code = event.code
                    answer.error = f"{event.code} in {event.stage or '?'}: {event.message}"
        except TimeoutError:
            answer.error_code = "timeout"
            answer.error = f"no answer event within {timeout_s:.0f}s"
        return answer


# --- direct access to the index and models ---------------------------------------------------------------------


class EvalClients:
    """Triton (embedder, reranker), Redis and Milvus clients for scoring; the same services the worker uses."""

    def __init__(self, settings: Settings) -> None:
        import redis.asyncio as aioredis

        from processors.ingest.state import DocStates
        from streams.agents._resources import milvus_client

        self.settings = settings
        self.triton = TritonClient(settings.triton_address, timeout_s=max(60.0, settings.request_timeout_s))
        self.embedder = TritonEmbedder(self.triton)
        self.reranker = TritonReranker(self.triton)
        self.redis = aioredis.Redis.from_url(settings.redis_address)
        self.milvus = milvus_client(settings.milvus_address)  # without its keepalive, long evals lose RPCs
        states = DocStates(self.redis, prefix=settings.topic_prefix)
        self.index = MilvusIndex(
            self.milvus, settings.milvus_address, states, collection=collection_name(settings.topic_prefix)
        )

    async def close(self) -> None:
        await self.triton.close()
        await self.redis.aclose()
        await self.milvus.close()

    async def embed_all(self, texts: Sequence[str]) -> dict[str, Vectors]:
        """One embedding per distinct non-empty text."""
        unique = list(dict.fromkeys(t for t in texts if t.strip()))
        vectors = await self.embedder.embed(unique) if unique else np.zeros((0, self.embedder.dim), np.float32)
        return {text: vectors[i] for i, text in enumerate(unique)}

    async def chunk_texts(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        ids = sorted(set(chunk_ids))
        if not ids:
            return {}
        await self.index.ensure_collection()
        rows = await self.milvus.query(
            self.index.collection,
            filter=f"chunk_id in [{', '.join(map(literal, ids))}]",
            output_fields=["chunk_id", "text"],
        )
        return {str(row["chunk_id"]): str(row["text"]) for row in rows}

    async def rankings(self, tenant: str, question: str, vector: Sequence[float], top_k: int) -> dict[str, Any]:
        """Every mode's top ``top_k`` for one question, and how long each took (ms)."""
        ranked: dict[str, list[Passage]] = {}
        took: dict[str, float] = {}
        modes: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")
        for mode in modes:
            started = time.perf_counter()
            ranked[mode] = await self.index.search(tenant, question, vector, top_k, mode)
            took[mode] = (time.perf_counter() - started) * 1000.0
        # one reranker call per question over the union of the three lists, then each list reordered by it
        started = time.perf_counter()
        pool = {p.chunk_id: p for mode in modes for p in ranked[mode]}
        scores = await self.reranker.scores(question, [p.text for p in pool.values()]) if pool else []
        by_id = dict(zip(pool, scores, strict=True))
        rerank_ms = (
            (time.perf_counter() - started)
            * 1000.0
            * (max((len(ranked[mode]) for mode in modes), default=0) / max(1, len(pool)))
        )  # the time one list of top_k would take, pro rata
        for mode in modes:
            rescored = [msgspec.structs.replace(p, score=by_id[p.chunk_id]) for p in ranked[mode]]
            ranked[f"{mode}+rerank"] = sorted(rescored, key=lambda p: p.score, reverse=True)
            took[f"{mode}+rerank"] = took[mode] + rerank_ms
        return {"ranked": ranked, "ms": took}


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    golden: Path
    tenant: str = "default"
    limit: int | None = None
    model: str | None = None
    prompt_version: str | None = None
    use_cache: bool = True
    max_tokens: int | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    rule: m.PassRule = field(default_factory=m.PassRule)
    sentence_support: float = 0.5
    top_k: int = 20
    out_root: Path = DEFAULT_OUT
    retrieval: bool = True


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


async def run_pipeline(
    settings: Settings, config: EvalConfig, cases: Sequence[GoldenCase], run_id: str, progress: Progress
) -> dict[str, Answer]:
    """Publish every case and its request, collect the answers (``concurrency`` in flight)."""
    results_topic = topic_name("eval_results", settings)
    options = QueryOptions(
        model=config.model,
        prompt_version=config.prompt_version,
        use_cache=config.use_cache,
        max_tokens=config.max_tokens,
    )
    answers: dict[str, Answer] = {}
    gate = asyncio.Semaphore(max(1, config.concurrency))
    done = 0
    async with EvalAsker(settings, reply_topic=results_topic) as asker:

        async def one(case: GoldenCase) -> None:
            nonlocal done
            async with gate:
                request = QueryRequest(
                    request_id=new_id(),
                    tenant=config.tenant,
                    question=case.question,
                    reply_to=ReplyTo(topic=results_topic),
                    session_id=f"eval:{run_id}",
                    options=options,
                    deadline=time.time() + config.timeout_s,
                )
                await asker.publish(
                    "eval_cases",
                    f"{run_id}/{case.id}",
                    EvalCaseEvent(
                        run_id=run_id,
                        case_id=case.id,
                        request_id=request.request_id,
                        tenant=config.tenant,
                        question=case.question,
                        expect_refusal=case.expect_refusal,
                        reference_answer=case.reference_answer,
                        tags=case.tags,
                        options=options,
                    ),
                )
                answers[case.id] = await asker.ask(request, timeout_s=config.timeout_s)
            done += 1
            if done % 10 == 0 or done == len(cases):
                progress(f"  answered {done}/{len(cases)}")

        await asyncio.gather(*(one(case) for case in cases))
    return answers


async def rank_cases(
    config: EvalConfig, cases: Sequence[GoldenCase], clients: EvalClients, progress: Progress
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The question vectors, and every retrieval mode's ranking per case (searched directly in Milvus)."""
    q_vectors = await clients.embed_all([c.question for c in cases])
    rankings: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(cases, start=1):
        vector = q_vectors.get(case.question)
        if vector is None:
            continue
        rankings[case.id] = await clients.rankings(config.tenant, case.question, vector.tolist(), config.top_k)
        if i % 20 == 0 or i == len(cases):
            progress(f"  retrieved {i}/{len(cases)} (6 modes each)")
    return q_vectors, rankings


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
    settings: Settings, config: EvalConfig, cases: Sequence[GoldenCase], rankings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The retrieval comparison from rankings alone (no answers), for cases beyond the answered sample."""
    records = [
        {"retrieval": retrieval_record(case, rankings.get(case.id)), "expect_refusal": case.expect_refusal}
        for case in cases
    ]
    return summarize_retrieval(records, settings, config.top_k)


async def score_cases(
    settings: Settings,
    config: EvalConfig,
    cases: Sequence[GoldenCase],
    answers: dict[str, Answer],
    clients: EvalClients,
    q_vectors: dict[str, Any],
    rankings: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Retrieval per mode (from ``rank_cases``) and every answer metric, one record per case."""
    pipeline_mode = f"{settings.search_mode}+rerank"
    ranked_here = {case.id: rankings[case.id] for case in cases if case.id in rankings}
    # what the model saw, approximately: the pipeline mode's reranked top rerank_k
    context: dict[str, list[Passage]] = {
        cid: r["ranked"][pipeline_mode][: settings.rerank_k] for cid, r in ranked_here.items()
    }
    known = {p.chunk_id: p.text for r in ranked_here.values() for ps in r["ranked"].values() for p in ps}
    cited_ids = [c.chunk_id for a in answers.values() for c in a.citations]
    known.update(await clients.chunk_texts([cid for cid in cited_ids if cid not in known]))
    texts: list[str] = []
    for case in cases:
        answer = answers.get(case.id)
        texts += [m.strip_citations(answer.text) if answer else "", case.reference_answer]
        texts += [p.text for p in context.get(case.id, [])]
    vectors = {**q_vectors, **await clients.embed_all(texts)}

    records: list[dict[str, Any]] = []
    for case in cases:
        answer = answers.get(case.id) or Answer(request_id="", error="not sent", error_code="not_sent")
        ranked: dict[str, list[Passage]] = rankings.get(case.id, {}).get("ranked", {})
        retrieval = retrieval_record(case, rankings.get(case.id))
        ctx = context.get(case.id, [])
        answered = not answer.failed and not answer.refused
        clean = m.strip_citations(answer.text)
        q_vec = vectors.get(case.question)
        a_vec = vectors.get(clean)
        r_vec = vectors.get(case.reference_answer)
        cited = {c.number: known.get(c.chunk_id, "") for c in answer.citations}
        grounded = (
            m.groundedness(answer.text, cited, [p.text for p in ctx], threshold=config.sentence_support)
            if answered
            else None
        )
        retrieved_ids = {p.chunk_id for p in ranked.get(settings.search_mode, [])}
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
            rule=config.rule,
        )
        records.append(
            {
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
                "decode_tokens_per_s": _round(
                    m.decode_tokens_per_s(answer.completion_tokens, answer.server_timings_ms), 2
                ),
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
        )
    return records


class _Scores(msgspec.Struct):
    recall_at_5: float | None
    recall_at_20: float | None
    mrr: float | None
    ndcg_at_10: float | None


def _as_struct(scores: m.RetrievalScores) -> _Scores:
    return _Scores(scores.recall_at_5, scores.recall_at_20, scores.mrr, scores.ndcg_at_10)


def summarize_retrieval(records: Sequence[dict[str, Any]], settings: Settings, top_k: int) -> dict[str, Any]:
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
        "top_k": top_k,
        "pipeline_mode": settings.search_mode,
        "modes": modes,
    }
    summary.update(retrieval_verdict(modes, settings.search_mode))
    summary["refusal_gate"] = refusal_gate(records, f"{settings.search_mode}+rerank", settings.min_relevance)
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
    config: EvalConfig, settings: Settings, records: Sequence[dict[str, Any]], run_id: str, seconds: float
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
        "golden": str(config.golden),
        "tenant": config.tenant,
        "model": config.model or ", ".join(models),
        "prompt_version": config.prompt_version,
        "use_cache": config.use_cache,
        "max_tokens": config.max_tokens,
        "cases": len(records),
        "answerable": len(answerable),
        "refusal_expected": len(expected),
        "duration_s": round(seconds, 2),
        "concurrency": config.concurrency,
        "thresholds": {
            "groundedness": config.rule.groundedness,
            "similarity": config.rule.similarity,
            "sentence_support": config.sentence_support,
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
        "retrieval": summarize_retrieval(records, settings, config.top_k) if config.retrieval else None,
    }


def dump_json(path: Path, data: Any) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")


def write_cases(folder: Path, records: Sequence[dict[str, Any]]) -> None:
    """One JSON file per scored case, named after the case id."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        dump_json(folder / f"{safe_name(record['id'])}.json", record)


def new_run_dir(root: Path, run_id: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    if path.exists():
        path = root / f"{stamp}-{run_id[:6]}"
    path.mkdir(parents=True)
    return path


async def evaluate(
    settings: Settings, config: EvalConfig, *, progress: Progress = print_progress
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the golden set through the pipeline, score it, publish the scores: the summary (kind "eval", with the
    "retrieval" comparison nested) and one record per case. Writes no files, so a combined report can embed it."""
    every_case = load_golden(config.golden)
    cases = select_cases(every_case, config.limit)
    if not cases:
        raise ValueError(f"{config.golden} has no cases")
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    progress(f"eval {run_id}: {len(cases)} cases from {config.golden} on tenant {config.tenant}")
    answers = await run_pipeline(settings, config, cases, run_id, progress)
    pipeline_s = time.perf_counter() - started
    # Answers may be a sample; retrieval (searches and reranks, no generation) is then judged on every case, and the
    # sample's rankings come from the same pass.
    sampled = config.retrieval and len(cases) < len(every_case)
    clients = EvalClients(settings)
    try:
        q_vectors, rankings = await rank_cases(config, every_case if sampled else cases, clients, progress)
        records = await score_cases(settings, config, cases, answers, clients, q_vectors, rankings)
    finally:
        await clients.close()
    summary = summarize(config, settings, records, run_id, pipeline_s)
    if sampled:
        summary["retrieval"] = summarize_rankings(settings, config, every_case, rankings)
    await _publish_results(settings, run_id, records)
    return summary, records


async def run_eval(settings: Settings, config: EvalConfig, *, progress: Progress = print_progress) -> Path:
    """The whole ``ragstream eval``: returns the results folder (per-case JSON, summary JSON, PNGs, Markdown)."""
    facts = run_facts()
    summary, records = await evaluate(settings, config, progress=progress)
    summary.update(facts, load_average_end=load_average())
    out = new_run_dir(config.out_root, summary["run_id"])
    write_cases(out / "cases", records)
    write_run(out, "ragstream evaluation", summary)
    progress(f"results: {out}")
    return out


async def _publish_results(settings: Settings, run_id: str, records: Sequence[dict[str, Any]]) -> None:
    """Scored cases on ``eval_results`` so dashboards and later runs can read them from Kafka."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        for r in records:
            scores = {k: float(v) for k, v in r["scores"].items() if isinstance(v, int | float) and v is not None}
            event = EvalCaseResult(
                run_id=run_id,
                case_id=r["id"],
                request_id=r["answer"]["request_id"],
                passed=r["passed"],
                refused=r["refused"],
                finish_reason=r["answer"]["finish_reason"],
                error=r["error"],
                scores=scores,
            )
            await producer.send(topic_name("eval_results", settings), encode(event), key=f"{run_id}/{r['id']}".encode())
        await producer.flush()
    finally:
        await producer.stop()
