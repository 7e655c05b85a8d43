"""Query latency while a bulk ingest runs, against the same queries on the idle stack, in one run (issue 14).

1. A private stack (Kafka, Redis, Milvus, Triton with the query models and ``embedder_bulk``, one worker of the
   default role) ingests the FAQ and the tutorial for the asking tenant.
2. Idle: ``--requests`` FAQ questions at ``--rate`` q/s (Poisson arrivals, ``llm_echo`` so generation costs the
   same every time) and the deployment's reranker setting (on by default; from 2026-12-02 19:15 to 2026-12-03 07:30
   UTC they skipped it, as the bus benchmark's do), through Kafka as any service asks.
3. Bulk: the whole Python 3.11 docs (530 pages, about 20k chunks) are ingested for a second tenant, as a knowledge
   base is re-indexed while people use it; 15 s into it the same questions are asked again at the same times.

The goal: time to first token p95 during the ingest at most twice the idle p95, and no question failing. A question
counts as asked during the ingest only when its answer came before the ingest ended; the report says how many did.

``--split-roles`` runs the deployment the worker's docs recommend for this: a ``query`` worker and an ``ingest``
worker (which lowers its CPU priority) instead of one worker of the ``all`` role.

    python benchmarks/pipeline/bench_ingest_interference.py                 # private stack, ~13 min on 2 cores
    python benchmarks/pipeline/bench_ingest_interference.py --split-roles
    python benchmarks/pipeline/bench_ingest_interference.py --reuse-env

Results: summary.json and summary.md under benchmarks/results/pipeline/ingest-interference-<stamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYDOCS,
    RESULTS,
    Measured,
    bench_stack,
    faq_questions,
    ingest_corpus,
    publish,
    service_memory,
    stamped_dir,
    wait_worker,
)
from bench_latency import STACK_OVERRIDES, Sample, arrivals, run_kafka, summarize

from infra.services.worker import WorkerService
from infra.settings import Settings
from processors.reporting.machine import run_facts

BULK_HEAD_START_S = 15.0  # the ingest is under way (pages sent, embedding) before the first question


@contextmanager
def role_workers(settings: Settings) -> Iterator[None]:
    """A query worker and an ingest worker (instances 1 and 2, so their ports differ), started and stopped by PID
    like any service of the stack."""
    workers = [WorkerService(settings, 1, role="query"), WorkerService(settings, 2, role="ingest")]
    try:
        for worker in workers:
            worker.start()
        yield
    finally:
        for worker in workers:
            worker.stop()


def _during(samples: list[Sample], offset_s: float, ingest_end_s: float) -> int:
    """Questions answered before the ingest ended (times from the question phase's start)."""
    return sum(1 for s in samples if s.total_ms is not None and offset_s + s.done_at_s <= ingest_end_s)


async def run(settings: Settings, args: argparse.Namespace, tenant: str) -> dict[str, Any]:
    from streams.clients.ingest import ingest

    corpus = await ingest_corpus(settings, tenant)
    await wait_worker(settings)
    pool = faq_questions()
    questions = [pool[(i * 7) % len(pool)] for i in range(args.requests)]
    schedule = arrivals(args.rate, args.requests, seed=1)
    print(f"\n== idle: {args.requests} questions at {args.rate:g} q/s ...", flush=True)
    idle = await run_kafka(settings, questions, schedule, args.max_tokens, tenant, args.drain, rerank=None)
    idle_summary = summarize(idle, args.rate)
    print(f"   TTFT {idle_summary['ttft_ms']}  errors {idle_summary['errors']}", flush=True)

    print(f"\n== bulk ingest of {args.bulk} for another tenant, questions again after {BULK_HEAD_START_S:g} s ...",
          flush=True)  # fmt: skip
    started = time.monotonic()
    bulk = asyncio.create_task(
        ingest(settings, [args.bulk], f"{tenant}-bulk", root=args.bulk, timeout_s=3600.0, progress=False)
    )
    await asyncio.sleep(BULK_HEAD_START_S)
    if bulk.done():
        raise RuntimeError(f"the bulk ingest ended within {BULK_HEAD_START_S:g} s: {bulk.result()}")
    asked_at = time.monotonic() - started
    busy = await run_kafka(settings, questions, schedule, args.max_tokens, tenant, args.drain, rerank=None)
    questions_done_at = time.monotonic() - started
    report = await bulk
    ingest_end = time.monotonic() - started
    busy_summary = summarize(busy, args.rate)
    print(f"   TTFT {busy_summary['ttft_ms']}  errors {busy_summary['errors']}", flush=True)

    idle_p95, busy_p95 = idle_summary["ttft_ms"]["p95"], busy_summary["ttft_ms"]["p95"]
    ratio_p95 = round(busy_p95 / idle_p95, 2) if idle_p95 > 0 else float("inf")
    during = _during(busy, asked_at, ingest_end)
    failed = busy_summary["errors"] + idle_summary["errors"]
    met = ratio_p95 <= 2.0 and failed == 0 and during == len(busy)
    verdict = "met" if met else "not met"
    if during < len(busy):
        verdict += f" ({len(busy) - during} of {len(busy)} answers came after the ingest ended)"
    measured = Measured(args, settings, corpus, service_memory(settings), 0.0)
    return measured.summary(
        "ingest_interference",
        "Query latency during a bulk ingest vs idle",
        model="llm_echo",
        rate_qps=args.rate,
        requests=args.requests,
        idle=idle_summary,
        during_ingest=busy_summary,
        ttft_p95_ratio=ratio_p95,
        failed_questions=failed,
        answered_while_ingesting=during,
        bulk_ingest={
            "path": str(args.bulk),
            "files": report.files,
            "indexed": report.indexed,
            "chunks": report.chunks,
            "failed": report.failed,
            "seconds": round(report.seconds, 1),
            "questions_from_s": round(asked_at, 1),
            "questions_until_s": round(questions_done_at, 1),
            "ended_s": round(ingest_end, 1),
        },
        ingest_embedder=settings.ingest_embedder_model,
        rerank=settings.rerank,
        workers="a query worker and an ingest worker" if args.split_roles else "one worker, role all",
        ingest_worker_nice=settings.ingest_worker_nice if args.split_roles else 0,
        goal="TTFT p95 during a bulk ingest <= 2x idle, zero queries failing",
        verdict=verdict,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1.0, help="questions per second in both phases")
    parser.add_argument("--requests", type=int, default=120, help="questions per phase")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for any one answer event")
    parser.add_argument("--bulk", type=Path, default=PYDOCS, help="the folder ingested during the second phase")
    parser.add_argument("--split-roles", action="store_true", help="a query worker and an ingest worker, not one")
    parser.add_argument("--reuse-env", action="store_true", help="use the running stack + worker from RAGSTREAM_*")
    args = parser.parse_args()
    if not args.bulk.is_dir():
        raise SystemExit(f"{args.bulk} is missing: apt-get install -y python3.11-doc")
    facts = run_facts()
    started = time.monotonic()
    tenant = f"bench{uuid.uuid4().hex[:6]}"
    with bench_stack(args.reuse_env, [] if args.split_roles else ["worker"], **STACK_OVERRIDES) as settings:
        if args.split_roles:
            with role_workers(settings):
                summary = asyncio.run(run(settings, args, tenant))
        else:
            summary = asyncio.run(run(settings, args, tenant))
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary = {**facts, **summary}
    print(f"\nTTFT p95 idle {summary['idle']['ttft_ms']['p95']} ms, during ingest "
          f"{summary['during_ingest']['ttft_ms']['p95']} ms (x{summary['ttft_p95_ratio']}); failed "
          f"{summary['failed_questions']}; verdict: {summary['verdict']}", flush=True)  # fmt: skip
    name = "ingest-interference-split" if args.split_roles else "ingest-interference"
    publish(stamped_dir(RESULTS, name), "ragstream: queries during a bulk ingest", summary)


if __name__ == "__main__":
    main()
