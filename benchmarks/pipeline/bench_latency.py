"""Latency breakdown of the query path through Kafka at fixed arrival rates, against the same stages in-process.

For each rate (default 1, 10, 50 queries/s) the benchmark sends FAQ questions over Kafka (``KafkaAsker``, as any
service would) with open-loop Poisson arrivals, bounded by ``--duration`` and ``--max-requests``, using the
deterministic ``llm_echo`` model (``--max-tokens`` words at 5 ms each) so model time is small and known, and with
the reranker off for these questions (``QueryOptions.rerank``): its CPU time grows with load, and the bus should
be the only variable. Per
request: end-to-end TTFT (send -> first delta), total (send -> done), and the worker's per-stage timings from
``AnswerDone.timings_ms``. Kafka/Faust overhead = total - (guard + embed + cache + retrieve + rerank + prompt +
generate); TTFT overhead = TTFT - (prepare stages + model TTFT). Both include every queue wait outside a stage.

The same questions at the same arrival times then go through the in-process baseline: ``QueryProcessor.prepare``
and ``.answer`` back to back in this process, with the same Triton/Milvus/Redis clients (``Resources``) and the
worker's own concurrency limits (``Settings.prepare_concurrency`` and ``generate_concurrency``), so the bus's cost
is a ratio. A rate counts as sustained when every request is answered and the median latency of the
last quarter is at most twice that of the first quarter (no growing backlog).

    python benchmarks/pipeline/bench_latency.py                 # private stack on free ports, ~10 min here
    python benchmarks/pipeline/bench_latency.py --reuse-env     # the stack + worker named by RAGSTREAM_*

``benchmarks/run_all.py`` calls :func:`measure` and :func:`build_summary` on its shared stack; the Markdown and the
figure come from the "latency" renderer in ``processors/evaluation/bench_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYDOCS,
    RESULTS,
    Measured,
    bench_stack,
    dist,
    faq_questions,
    floats,
    ingest_corpus,
    percentile,
    publish,
    service_memory,
    stamped_dir,
    wait_worker,
)

from infra.settings import Settings
from processors.evaluation.metrics import decode_tokens_per_s
from processors.reporting.bench_sections import PREPARE_STAGES, STAGES, goals_summary
from processors.reporting.machine import run_facts
from schemas.events import AnswerDone, AnswerError, AnswerEvent, QueryOptions, QueryRequest, ReplyTo, TokenDelta

# What the stack needs for this benchmark: a long request timeout, so overload shows as latency, not errors.
STACK_OVERRIDES: dict[str, object] = {"request_timeout_s": 300.0}


@dataclass
class LatencyConfig:
    """What to measure; the defaults are the issue's rates with a bounded number of requests each."""

    rates: list[float] = field(default_factory=lambda: [1.0, 10.0, 50.0])
    probe_rates: list[float] = field(default_factory=list)  # Kafka-only extra rates, to find the sustained one
    duration_s: float = 12.0
    max_requests: int = 40
    drain_s: float = 120.0
    max_tokens: int = 16
    baseline: bool = True
    no_docs: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LatencyConfig:
        """From this script's options or run_all's (the same names; what run_all does not offer keeps its default)."""
        return cls(
            rates=args.rates,
            probe_rates=getattr(args, "probe_rates", []),
            duration_s=args.duration,
            max_requests=args.max_requests,
            drain_s=args.drain,
            max_tokens=args.max_tokens,
            baseline=not getattr(args, "skip_baseline", False),
            no_docs=getattr(args, "no_docs", False),
        )


@dataclass
class Sample:
    index: int
    scheduled_s: float
    send_lag_ms: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    completion_tokens: int = 0
    finish: str = ""
    error: str = ""
    done_at_s: float = 0.0

    def record(self, event: AnswerEvent, sent: float, start: float) -> None:
        """One answer event, seen now; ``sent`` and ``start`` are perf_counter times of the request and the run."""
        now = time.perf_counter()
        if isinstance(event, TokenDelta) and self.ttft_ms is None:
            self.ttft_ms = (now - sent) * 1000
        elif isinstance(event, AnswerDone):
            self.total_ms = (now - sent) * 1000
            self.timings = dict(event.timings_ms)
            self.completion_tokens = event.usage.completion_tokens
            self.finish = event.finish_reason
            self.done_at_s = now - start
        elif isinstance(event, AnswerError):
            self.error = f"{event.code}: {event.message[:100]}"

    @property
    def compute_ms(self) -> float:
        return sum(self.timings.get(k, 0.0) for k in (*PREPARE_STAGES, "generate"))

    @property
    def overhead_ms(self) -> float | None:
        return None if self.total_ms is None else self.total_ms - self.compute_ms

    @property
    def ttft_overhead_ms(self) -> float | None:
        if self.ttft_ms is None:
            return None
        before_first = sum(self.timings.get(k, 0.0) for k in PREPARE_STAGES) + self.timings.get("ttft_model", 0.0)
        return self.ttft_ms - before_first

    @property
    def tokens_per_s(self) -> float | None:
        return decode_tokens_per_s(self.completion_tokens, self.timings)


def arrivals(rate: float, count: int, seed: int) -> list[float]:
    """Poisson arrival offsets (exponential gaps), seconds from the start."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def options(max_tokens: int, *, rerank: bool | None = False) -> QueryOptions:
    """Fixed-cost stages, so that the bus is what varies: the echo model (5 ms a word) and by default no reranker
    (whose CPU time grows with load and would saturate both paths long before the bus does); ``rerank=None`` keeps
    the deployment's setting."""
    return QueryOptions(model="llm_echo", max_tokens=max_tokens, rerank=rerank)


async def run_kafka(
    settings: Settings,
    questions: list[str],
    schedule: list[float],
    max_tokens: int,
    tenant: str,
    drain_s: float,
    *,
    rerank: bool | None = False,
) -> list[Sample]:
    from streams.clients.asker import KafkaAsker

    samples = [Sample(i, s) for i, s in enumerate(schedule)]
    async with KafkaAsker(settings) as asker:
        start = time.perf_counter()

        async def one(sample: Sample) -> None:
            await asyncio.sleep(max(0.0, start + sample.scheduled_s - time.perf_counter()))
            sent = time.perf_counter()
            sample.send_lag_ms = (sent - start - sample.scheduled_s) * 1000
            try:
                request_id = await asker.send(
                    questions[sample.index],
                    tenant=tenant,
                    options=options(max_tokens, rerank=rerank),
                    request_id=uuid.uuid4().hex,
                )
                async for event in asker.events(request_id, timeout_s=drain_s):
                    sample.record(event, sent, start)
            except TimeoutError:
                sample.error = f"no answer event within {drain_s:.0f}s"

        await asyncio.gather(*(one(s) for s in samples))
    return samples


async def run_inprocess(
    processor: Any,
    questions: list[str],
    schedule: list[float],
    max_tokens: int,
    tenant: str,
    *,
    prepare_slots: int,
    generate_slots: int,
) -> list[Sample]:
    """The worker's two stages back to back in this process, each behind as many slots as the worker's agents
    have (``Settings.prepare_concurrency``, ``generate_concurrency``), so both paths queue alike under load."""
    samples = [Sample(i, s) for i, s in enumerate(schedule)]
    preparing, generating = asyncio.Semaphore(prepare_slots), asyncio.Semaphore(generate_slots)
    start = time.perf_counter()

    async def one(sample: Sample) -> None:
        await asyncio.sleep(max(0.0, start + sample.scheduled_s - time.perf_counter()))
        sent = time.perf_counter()
        sample.send_lag_ms = (sent - start - sample.scheduled_s) * 1000
        request = QueryRequest(
            request_id=uuid.uuid4().hex,
            tenant=tenant,
            question=questions[sample.index],
            reply_to=ReplyTo(topic="in-process"),
            options=options(max_tokens),
        )
        try:
            async with preparing:
                prepared = await processor.prepare(request)
            for event in prepared.final:
                sample.record(event, sent, start)
            if prepared.prompted is not None:
                async with generating:
                    async for event in processor.answer(prepared.prompted):
                        sample.record(event, sent, start)
        except Exception as exc:  # a failed request is a result, not the end of the benchmark
            sample.error = f"{type(exc).__name__}: {exc}"[:200]

    await asyncio.gather(*(one(s) for s in samples))
    return samples


def summarize(samples: list[Sample], rate: float) -> dict[str, Any]:
    """One rate on one path: distributions of every measure, and whether the rate was sustained."""
    ok = [s for s in samples if s.total_ms is not None and not s.error]
    quarter = max(1, len(ok) // 4)
    by_send = sorted(ok, key=lambda s: s.scheduled_s)
    first = percentile([s.total_ms or 0.0 for s in by_send[:quarter]], 50)
    last = percentile([s.total_ms or 0.0 for s in by_send[-quarter:]], 50)
    growth = last / first if first > 0 else math.inf
    span = max((s.done_at_s for s in ok), default=0.0)
    # Completion rate between the first and the last answer: under overload, the most the path can deliver.
    first_done = min((s.done_at_s for s in ok), default=0.0)
    gap = 1.0 / rate
    completion_rate = len(ok) / (span - first_done + gap) if ok else 0.0
    stages = {k: dist([s.timings[k] for s in ok if k in s.timings]) for k in STAGES}
    return {
        "offered_rate": rate,
        "requests": len(samples),
        "answered": len(ok),
        "errors": len(samples) - len(ok),
        "error_examples": sorted({s.error for s in samples if s.error})[:3],
        "finish_reasons": {r: sum(1 for s in ok if s.finish == r) for r in sorted({s.finish for s in ok})},
        "achieved_rate": round(len(ok) / span, 2) if span > 0 else 0.0,
        "backlog_growth": round(growth, 2),
        "completion_rate": round(completion_rate, 2),
        "sustained": len(ok) == len(samples) and growth <= 2.0 and completion_rate >= 0.8 * rate,
        "send_lag_ms": dist([s.send_lag_ms for s in samples]),
        "ttft_ms": dist([s.ttft_ms for s in ok if s.ttft_ms is not None]),
        "total_ms": dist([s.total_ms or 0.0 for s in ok]),
        "stage_compute_ms": dist([s.compute_ms for s in ok]),
        "overhead_ms": dist([s.overhead_ms or 0.0 for s in ok]),
        "ttft_overhead_ms": dist([s.ttft_overhead_ms for s in ok if s.ttft_overhead_ms is not None]),
        "tokens_per_s": dist([t for s in ok if (t := s.tokens_per_s) is not None]),
        "stages_ms": stages,
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else math.inf


def compare(kafka: dict[str, Any], local: dict[str, Any]) -> dict[str, float]:
    return {
        "total_p50": ratio(kafka["total_ms"]["p50"], local["total_ms"]["p50"]),
        "total_p99": ratio(kafka["total_ms"]["p99"], local["total_ms"]["p99"]),
        "ttft_p50": ratio(kafka["ttft_ms"]["p50"], local["ttft_ms"]["p50"]),
        "ttft_p99": ratio(kafka["ttft_ms"]["p99"], local["ttft_ms"]["p99"]),
    }


def fmt(d: dict[str, float]) -> str:
    return f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"


def rate_run(rate: float, kafka: dict[str, Any], local: dict[str, Any] | None) -> dict[str, Any]:
    """One rate's entry in the summary: both paths and the bus cost as Kafka over in-process."""
    run: dict[str, Any] = {"rate": rate, "kafka": kafka}
    if local is not None:
        run["inprocess"] = local
        run["ratio"] = compare(kafka, local)
    return run


async def measure(settings: Settings, config: LatencyConfig, tenant: str) -> list[dict[str, Any]]:
    """Every rate through Kafka, then (for ``config.rates``) the same arrivals in-process. The corpus must be
    ingested for ``tenant`` and the worker up (:func:`wait_worker`)."""
    from streams.worker.resources import Resources

    pool = faq_questions()
    resources = Resources(settings)
    processor = await resources.query() if config.baseline else None
    runs: list[dict[str, Any]] = []
    try:
        plan = [(rate, True) for rate in config.rates] + [(rate, False) for rate in config.probe_rates]
        for n, (rate, with_baseline) in enumerate(plan):
            count = max(1, min(config.max_requests, round(rate * config.duration_s)))
            schedule = arrivals(rate, count, seed=n)
            questions = [pool[(i * 7 + n) % len(pool)] for i in range(count)]
            print(f"\n== {rate:g} q/s: {count} requests over ~{schedule[-1]:.1f}s (Kafka) ...", flush=True)
            samples = await run_kafka(settings, questions, schedule, config.max_tokens, tenant, config.drain_s)
            kafka = summarize(samples, rate)
            print(f"   kafka      TTFT {fmt(kafka['ttft_ms'])}  total {fmt(kafka['total_ms'])}  "
                  f"overhead {fmt(kafka['overhead_ms'])}  errors {kafka['errors']}  sustained {kafka['sustained']}",
                  flush=True)  # fmt: skip
            local = None
            if processor is not None and with_baseline:
                await asyncio.sleep(2.0)
                slots = {"prepare_slots": settings.prepare_concurrency, "generate_slots": settings.generate_concurrency}
                local_samples = await run_inprocess(processor, questions, schedule, config.max_tokens, tenant, **slots)
                local = summarize(local_samples, rate)
                print(f"   in-process TTFT {fmt(local['ttft_ms'])}  total {fmt(local['total_ms'])}  "
                      f"overhead {fmt(local['overhead_ms'])}  errors {local['errors']}  sustained {local['sustained']}",
                      flush=True)  # fmt: skip
            runs.append(rate_run(rate, kafka, local))
            if local is not None:
                print(f"   bus cost   {runs[-1]['ratio']}", flush=True)
            await asyncio.sleep(2.0)
    finally:
        await resources.close()
    return runs


def build_summary(runs: list[dict[str, Any]], measured: Measured) -> dict[str, Any]:
    """The "latency" summary the report renders: the runs plus what they were measured with."""
    sustained = [r["rate"] for r in runs if r["kafka"]["sustained"]]
    return measured.summary(
        "latency",
        "Query latency: Kafka pipeline vs in-process baseline",
        questions=len(faq_questions()),
        model="llm_echo",
        rerank=False,
        prepare_concurrency=measured.settings.prepare_concurrency,
        generate_concurrency=measured.settings.generate_concurrency,
        runs=runs,
        max_sustained=f"{max(sustained):g} q/s" if sustained else "none of the rates tried",
    )


async def ingest_and_measure(
    settings: Settings, config: LatencyConfig, tenant: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if config.no_docs:
        # One small page under another tenant, so the collection exists; the questions go to a tenant without
        # documents: retrieval finds nothing and the answer is the refusal (no rerank, no model call).
        corpus = await ingest_corpus(settings, f"{tenant}x", [PYDOCS / "faq" / "installed.html"])
        corpus["note"] = "questions asked as a tenant without documents"
    else:
        corpus = await ingest_corpus(settings, tenant)
    await wait_worker(settings)
    return corpus, await measure(settings, config, tenant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=floats, default=[1.0, 10.0, 50.0])
    parser.add_argument("--probe-rates", type=floats, default=[],
                        help="extra Kafka-only rates, to find the highest sustained one")  # fmt: skip
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of arrivals per rate (at most)")
    parser.add_argument("--max-requests", type=int, default=40, help="requests per rate (at most)")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for any one answer event")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--skip-baseline", action="store_true")
    no_docs_help = "ask as a tenant without documents: guard, embed, cache, search, refusal (bus cost)"
    parser.add_argument("--no-docs", action="store_true", help=no_docs_help)
    parser.add_argument("--reuse-env", action="store_true", help="use the running stack + worker from RAGSTREAM_*")
    args = parser.parse_args()
    config = LatencyConfig.from_args(args)
    facts = run_facts()
    started = time.monotonic()
    tenant = f"bench{uuid.uuid4().hex[:6]}"
    with bench_stack(args.reuse_env, ["worker"], **STACK_OVERRIDES) as settings:
        corpus, runs = asyncio.run(ingest_and_measure(settings, config, tenant))
        measured = Measured(config, settings, corpus, service_memory(settings), time.monotonic() - started)
    summary = {**facts, **build_summary(runs, measured)}
    summary["goals"] = goals_summary(latency=summary)
    name = "latency-nodocs" if config.no_docs else "latency"
    publish(stamped_dir(RESULTS, name), "ragstream latency benchmark", summary)


if __name__ == "__main__":
    main()
