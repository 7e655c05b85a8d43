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
import dataclasses
import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from infra.kafka_security import client_options
from infra.settings import REPO_ROOT, Settings
from processors.adapters.doc_states import DocStates
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.milvus import MilvusIndex, collection_name, milvus_client
from processors.adapters.reranker import TritonReranker
from processors.adapters.triton import TritonClient
from processors.citations import strip_citations
from processors.claims.lexical import LexicalClaimChecker
from processors.claims.verdicts import ClaimChecker
from processors.evaluation import metrics as m
from processors.evaluation.golden import GoldenCase, load_golden
from processors.evaluation.scoring import (
    AnswerRecord,
    CaseRecord,
    EvalSummary,
    Ranking,
    RunDescription,
    ScoringOptions,
    safe_name,
    score_case,
    select_cases,
    summarize,
    summarize_rankings,
)
from processors.protocols import SearchMode, Vectors
from processors.reporting.machine import load_average, run_facts
from processors.reporting.report import write_run
from schemas.codec import encode
from schemas.events import (
    AnswerDone,
    AnswerError,
    EvalCaseEvent,
    EvalCaseResult,
    Passage,
    QueryOptions,
    QueryRequest,
    ReplyTo,
    TokenDelta,
    new_id,
)
from schemas.topics import Topic
from streams.clients.asker import KafkaAsker

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "eval"

Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- talking to the pipeline -----------------------------------------------------------------------------------


class EvalAsker(KafkaAsker):
    """A :class:`KafkaAsker` that sends prepared requests (session id, deadline) and publishes eval events."""

    async def __aenter__(self) -> EvalAsker:
        await super().__aenter__()
        return self

    async def send_request(self, request: QueryRequest) -> None:
        self._queues[request.request_id] = asyncio.Queue()
        await self._producer.send_and_wait(
            self.settings.topic(Topic.QUERIES), encode(request), key=request.request_id.encode()
        )

    async def publish(self, topic: Topic, key: str, event: msgspec.Struct) -> None:
        await self._producer.send_and_wait(self.settings.topic(topic), encode(event), key=key.encode())

    async def ask(self, request: QueryRequest, *, timeout_s: float) -> AnswerRecord:
        """Send ``request`` and collect its answer events until done, error or ``timeout_s`` of silence."""
        answer = AnswerRecord(request_id=request.request_id)
        started = time.perf_counter()
        await self.send_request(request)
        try:
            async for event in self.events(request.request_id, timeout_s=timeout_s):
                elapsed = (time.perf_counter() - started) * 1000.0
                if isinstance(event, TokenDelta) and event.text and answer.ttft_ms is None:
                    answer.ttft_ms = elapsed
                elif isinstance(event, AnswerDone):
                    answer = record_of(event, answer.request_id, ttft_ms=answer.ttft_ms or elapsed, total_ms=elapsed)
                elif isinstance(event, AnswerError):
                    answer.total_ms = elapsed
                    answer.error_code = event.code
                    answer.error = f"{event.code} in {event.stage or '?'}: {event.message}"
        except TimeoutError:
            answer.error_code = "timeout"
            answer.error = f"no answer event within {timeout_s:.0f}s"
        return answer


def record_of(done: AnswerDone, request_id: str, *, ttft_ms: float | None, total_ms: float | None) -> AnswerRecord:
    """What an evaluation keeps of a finished answer, with the ranking it was built from."""
    return AnswerRecord(
        request_id=request_id,
        text=done.text,
        citations=list(done.citations),
        finish_reason=done.finish_reason,
        cached=done.cached,
        model=done.model,
        prompt_version=done.prompt_ref.version if done.prompt_ref else "",
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        server_timings_ms=dict(done.timings_ms),
        completion_tokens=done.usage.completion_tokens,
        prompt_tokens=done.usage.prompt_tokens,
        retrieval=list(done.retrieval),
        output_flags=list(done.output_verdict.reasons) if done.output_verdict else [],
    )


# --- direct access to the index and models ---------------------------------------------------------------------


class EvalClients:
    """Triton (embedder, reranker), Redis and Milvus clients for scoring; the same services the worker uses."""

    def __init__(self, settings: Settings) -> None:
        from streams.redis_client import redis_client

        self.settings = settings
        self.triton = TritonClient(settings.triton_address, timeout_s=max(60.0, settings.request_timeout_s))
        self.embedder = TritonEmbedder(self.triton)
        self.reranker = TritonReranker(self.triton)
        self.redis = redis_client(settings.redis_address)
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

    async def rankings(self, tenant: str, question: str, vector: Sequence[float], top_k: int) -> Ranking:
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
        return Ranking(ranked=ranked, ms=took)


# --- the run ---------------------------------------------------------------------------------------------------

CHECKERS: dict[str, Callable[[], ClaimChecker]] = {"lexical": LexicalClaimChecker}


@dataclass
class EvalConfig:
    golden: Path
    tenant: str = "default"
    limit: int | None = None
    model: str | None = None
    strategy: str | None = None
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
    checker: str = "lexical"

    def options(self, settings: Settings) -> ScoringOptions:
        return ScoringOptions(
            rule=self.rule,
            sentence_support=self.sentence_support,
            top_k=self.top_k,
            search_mode=settings.search_mode,
            min_relevance=settings.min_relevance,
            rerank_k=settings.rerank_k,
        )

    def description(self) -> RunDescription:
        return RunDescription(
            golden=str(self.golden),
            tenant=self.tenant,
            model=self.model,
            strategy=self.strategy,
            prompt_version=self.prompt_version,
            use_cache=self.use_cache,
            max_tokens=self.max_tokens,
            concurrency=self.concurrency,
            retrieval=self.retrieval,
        )


async def run_pipeline(
    settings: Settings, config: EvalConfig, cases: Sequence[GoldenCase], run_id: str, progress: Progress
) -> dict[str, AnswerRecord]:
    """Publish every case and its request, collect the answers (``concurrency`` in flight)."""
    results_topic = settings.topic(Topic.EVAL_RESULTS)
    options = QueryOptions(
        model=config.model,
        strategy=config.strategy,
        prompt_version=config.prompt_version,
        use_cache=config.use_cache,
        max_tokens=config.max_tokens,
    )
    answers: dict[str, AnswerRecord] = {}
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
                    Topic.EVAL_CASES,
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
) -> tuple[dict[str, Vectors], dict[str, Ranking]]:
    """The question vectors, and every retrieval mode's ranking per case (searched directly in Milvus)."""
    q_vectors = await clients.embed_all([c.question for c in cases])
    rankings: dict[str, Ranking] = {}
    for i, case in enumerate(cases, start=1):
        vector = q_vectors.get(case.question)
        if vector is None:
            continue
        rankings[case.id] = await clients.rankings(config.tenant, case.question, vector.tolist(), config.top_k)
        if i % 20 == 0 or i == len(cases):
            progress(f"  retrieved {i}/{len(cases)} (6 modes each)")
    return q_vectors, rankings


async def score_cases(
    settings: Settings,
    config: EvalConfig,
    cases: Sequence[GoldenCase],
    answers: Mapping[str, AnswerRecord],
    clients: EvalClients,
    q_vectors: Mapping[str, Vectors],
    rankings: Mapping[str, Ranking],
) -> list[CaseRecord]:
    """Every answer metric, judged on the passages each answer carried, and retrieval per mode: one record per case."""
    fallback = AnswerRecord(request_id="", error="not sent", error_code="not_sent")
    texts: list[str] = []
    for case in cases:
        answer = answers.get(case.id) or fallback
        texts += [strip_citations(answer.text), case.reference_answer, *(p.text for p in answer.context)]
    vectors = {**q_vectors, **await clients.embed_all(texts)}
    checker = CHECKERS[config.checker]()
    options = config.options(settings)
    return [
        score_case(case, answers.get(case.id) or fallback, rankings.get(case.id), vectors, options, checker)
        for case in cases
    ]


def dump_json(path: Path, data: Any) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")


def write_cases(folder: Path, records: Sequence[CaseRecord]) -> None:
    """One JSON file per scored case, named after the case id."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        dump_json(folder / f"{safe_name(record.id)}.json", record)


def new_run_dir(root: Path, run_id: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    if path.exists():
        path = root / f"{stamp}-{run_id[:6]}"
    path.mkdir(parents=True)
    return path


async def evaluate(
    settings: Settings, config: EvalConfig, *, progress: Progress = print_progress
) -> tuple[EvalSummary, list[CaseRecord]]:
    """Run the golden set through the pipeline, score it, publish the scores: the summary (kind "eval", with the
    "retrieval" comparison nested) and one record per case. Writes no files, so a combined report can embed it."""
    every_case = load_golden(config.golden)
    cases = select_cases(every_case, config.limit)
    if not cases:
        raise ValueError(f"{config.golden} has no cases")
    if config.checker not in CHECKERS:
        raise ValueError(f"unknown claim checker {config.checker!r}: one of {sorted(CHECKERS)}")
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
        if config.retrieval:
            q_vectors, rankings = await rank_cases(config, every_case if sampled else cases, clients, progress)
        else:  # the pipeline's own ranking (carried on each answer) is still scored
            q_vectors, rankings = await clients.embed_all([c.question for c in cases]), {}
        records = await score_cases(settings, config, cases, answers, clients, q_vectors, rankings)
    finally:
        await clients.close()
    options = config.options(settings)
    summary = summarize(config.description(), options, records, run_id, pipeline_s, checker=config.checker)
    if sampled:
        comparison = summarize_rankings(options, every_case, rankings)
        if summary.retrieval is not None and "pipeline" in summary.retrieval.modes:
            comparison.modes = {"pipeline": summary.retrieval.modes["pipeline"], **comparison.modes}
        summary.retrieval = comparison
    await _publish_results(settings, run_id, records)
    return summary, records


def as_json(summary: EvalSummary) -> dict[str, Any]:
    """The summary as the plain mapping reports and ``summary.json`` hold."""
    data: dict[str, Any] = msgspec.to_builtins(summary)
    return data


async def run_eval(settings: Settings, config: EvalConfig, *, progress: Progress = print_progress) -> Path:
    """The whole ``ragstream eval``: returns the results folder (per-case JSON, summary JSON, PNGs, Markdown)."""
    facts = run_facts()
    summary, records = await evaluate(settings, config, progress=progress)
    data = as_json(summary) | facts | {"load_average_end": load_average()}
    out = new_run_dir(config.out_root, summary.run_id)
    write_cases(out / "cases", records)
    write_run(out, "ragstream evaluation", data)
    progress(f"results: {out}")
    return out


class MatrixRow(msgspec.Struct, kw_only=True):
    model: str
    strategy: str
    correctness: float | None
    answered_coverage: float | None
    citation_precision: float | None
    refusal_accuracy: float | None
    false_refusal_rate: float | None
    pipeline_recall_at_5: float | None
    ttft_ms_p50: float | None
    decode_tokens_per_s_p50: float | None
    cases: int


def matrix_row(summary: EvalSummary) -> MatrixRow:
    q = summary.quality
    pipeline = summary.retrieval.modes.get("pipeline") if summary.retrieval else None
    return MatrixRow(
        model=summary.model,
        strategy=summary.strategy or "default",
        correctness=q.correctness,
        answered_coverage=q.answered_coverage,
        citation_precision=q.citation_precision,
        refusal_accuracy=q.refusal_accuracy,
        false_refusal_rate=q.false_refusal_rate,
        pipeline_recall_at_5=pipeline.recall_at_5 if pipeline else None,
        ttft_ms_p50=summary.latency_ms["ttft"].p50,
        decode_tokens_per_s_p50=summary.decode_tokens_per_s.p50,
        cases=summary.cases,
    )


async def run_matrix(
    settings: Settings,
    config: EvalConfig,
    models: Sequence[str | None],
    strategies: Sequence[str | None],
    *,
    progress: Progress = print_progress,
) -> Path:
    """Every (model, strategy) in turn on the same golden set, then one report with them side by side (kind
    "eval_matrix", each run's own summary nested after it). The retrieval comparison runs once, with the first."""
    facts = run_facts()
    runs: list[tuple[EvalSummary, list[CaseRecord]]] = []
    for index, (model, strategy) in enumerate((m_, s_) for m_ in models for s_ in strategies):
        progress(f"configuration {index + 1}: model {model or 'routed'}, strategy {strategy or 'default'}")
        run_config = dataclasses.replace(
            config, model=model, strategy=strategy, retrieval=config.retrieval and not runs
        )
        runs.append(await evaluate(settings, run_config, progress=progress))
    out = new_run_dir(config.out_root, runs[0][0].run_id)
    for summary, records in runs:
        write_cases(out / f"cases-{safe_name(summary.model)}-{safe_name(summary.strategy or 'default')}", records)
    data: dict[str, Any] = {
        "kind": "eval_matrix",
        "title": "Answer quality by model and strategy (same golden set, same run)",
        "golden": str(config.golden),
        "rows": [msgspec.to_builtins(matrix_row(summary)) for summary, _ in runs],
        **{f"run_{i}": as_json(summary) for i, (summary, _) in enumerate(runs)},
        **facts,
        "load_average_end": load_average(),
    }
    write_run(out, "ragstream evaluation: models and strategies", data)
    progress(f"results: {out}")
    return out


async def _publish_results(settings: Settings, run_id: str, records: Sequence[CaseRecord]) -> None:
    """Scored cases on ``eval_results`` so dashboards and later runs can read them from Kafka."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5, **client_options(settings)
    )
    await producer.start()
    try:
        for r in records:
            values = msgspec.structs.asdict(r.scores)
            scores = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and v is not None}
            event = EvalCaseResult(
                run_id=run_id,
                case_id=r.id,
                request_id=r.answer.request_id,
                passed=r.passed,
                refused=r.refused,
                finish_reason=r.answer.finish_reason,
                error=r.error,
                scores=scores,
            )
            await producer.send(settings.topic(Topic.EVAL_RESULTS), encode(event), key=f"{run_id}/{r.id}".encode())
        await producer.flush()
    finally:
        await producer.stop()
