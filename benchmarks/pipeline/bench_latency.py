"""Latency breakdown of the query path through Kafka at fixed arrival rates, against the same stages in-process.

For each rate (default 1, 10, 50 queries/s) the benchmark sends FAQ questions over Kafka (``KafkaAsker``, as any
service would) with open-loop Poisson arrivals, bounded by ``--duration`` and ``--max-requests``, using the
deterministic ``llm_echo`` model (``--max-tokens`` words at 5 ms each) so model time is small and known. Per
request: end-to-end TTFT (send -> first delta), total (send -> done), and the worker's per-stage timings from
``AnswerDone.timings_ms``. Kafka/Faust overhead = total - (guard + embed + cache + retrieve + rerank + prompt +
generate); TTFT overhead = TTFT - (prepare stages + model TTFT). Both include every queue wait outside a stage.

The same questions at the same arrival times then go through the in-process baseline: ``QueryProcessor.prepare``
and ``.answer`` back to back in this process, with the same Triton/Milvus/Redis clients (``Resources``), so the
bus's cost is a ratio. A rate counts as sustained when every request is answered and the median latency of the
last quarter is at most twice that of the first quarter (no growing backlog).

    python benchmarks/pipeline/bench_latency.py                 # private stack on free ports, ~10 min here
    python benchmarks/pipeline/bench_latency.py --reuse-env     # the stack + worker named by RAGSTREAM_*
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
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
    bench_stack,
    dist,
    faq_questions,
    have_matplotlib,
    header,
    ingest_corpus,
    machine_line,
    percentile,
    plot_path,
    service_memory,
    wait_worker,
    write_results,
)

from infra.settings import Settings
from schemas.events import AnswerDone, AnswerError, QueryOptions, QueryRequest, ReplyTo, TokenDelta

PREPARE_STAGES = ("input_guard", "embed", "cache_lookup", "retrieve", "rerank", "prompt")
STAGES = (*PREPARE_STAGES, "ttft_model", "generate")
GOAL_OVERHEAD_P99_MS = 25.0


@dataclass
class Sample:
    index: int
    scheduled_s: float
    send_lag_ms: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    finish: str = ""
    error: str = ""
    done_at_s: float = 0.0

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


def arrivals(rate: float, count: int, seed: int) -> list[float]:
    """Poisson arrival offsets (exponential gaps), seconds from the start."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def options(max_tokens: int) -> QueryOptions:
    return QueryOptions(model="llm_echo", max_tokens=max_tokens)


async def run_kafka(
    settings: Settings, questions: list[str], schedule: list[float], max_tokens: int, tenant: str, drain_s: float
) -> list[Sample]:
    from streams.client import KafkaAsker

    samples = [Sample(i, s) for i, s in enumerate(schedule)]
    async with KafkaAsker(settings) as asker:
        start = time.perf_counter()

        async def one(sample: Sample) -> None:
            await asyncio.sleep(max(0.0, start + sample.scheduled_s - time.perf_counter()))
            sent = time.perf_counter()
            sample.send_lag_ms = (sent - start - sample.scheduled_s) * 1000
            try:
                request_id = await asker.send(
                    questions[sample.index], tenant=tenant, options=options(max_tokens), request_id=uuid.uuid4().hex
                )
                async for event in asker.events(request_id, timeout_s=drain_s):
                    now = time.perf_counter()
                    if isinstance(event, TokenDelta) and sample.ttft_ms is None:
                        sample.ttft_ms = (now - sent) * 1000
                    elif isinstance(event, AnswerDone):
                        sample.total_ms = (now - sent) * 1000
                        sample.timings = dict(event.timings_ms)
                        sample.finish = event.finish_reason
                        sample.done_at_s = now - start
                    elif isinstance(event, AnswerError):
                        sample.error = f"{event.code}: {event.message[:100]}"
            except TimeoutError:
                sample.error = f"no answer event within {drain_s:.0f}s"

        await asyncio.gather(*(one(s) for s in samples))
    return samples


async def run_inprocess(
    processor: Any, settings: Settings, questions: list[str], schedule: list[float], max_tokens: int, tenant: str
) -> list[Sample]:
    samples = [Sample(i, s) for i, s in enumerate(schedule)]
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
            prepared = await processor.prepare(request)
            events = prepared.final
            if prepared.prompted is not None:
                events = []
                async for event in processor.answer(prepared.prompted):
                    if isinstance(event, TokenDelta) and sample.ttft_ms is None:
                        sample.ttft_ms = (time.perf_counter() - sent) * 1000
                    events.append(event)
            for event in events:
                now = time.perf_counter()
                if isinstance(event, TokenDelta) and sample.ttft_ms is None:
                    sample.ttft_ms = (now - sent) * 1000
                elif isinstance(event, AnswerDone):
                    sample.total_ms = (now - sent) * 1000
                    sample.timings = dict(event.timings_ms)
                    sample.finish = event.finish_reason
                    sample.done_at_s = now - start
                elif isinstance(event, AnswerError):
                    sample.error = f"{event.code}: {event.message[:100]}"
        except Exception as exc:  # a failed request is a result, not the end of the benchmark
            sample.error = f"{type(exc).__name__}: {exc}"[:200]

    await asyncio.gather(*(one(s) for s in samples))
    return samples


def summarize(samples: list[Sample], rate: float) -> dict[str, Any]:
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


def markdown(result: dict[str, Any]) -> str:
    note = "; " + result["corpus"]["note"] if "note" in result["corpus"] else ""
    lines = [
        "# Query latency: Kafka pipeline vs in-process baseline",
        "",
        machine_line(result),
        "",
        f"Corpus: {result['corpus']['files']} pages of {result['corpus']['dirs']} ({result['corpus']['chunks']} "
        f"chunks){note}. Model: llm_echo, {result['max_tokens']} tokens (5 ms each). Open-loop Poisson arrivals; "
        f"{result['questions']} distinct FAQ questions. Worker: one `ragstream worker` (prepare concurrency 8, "
        f"generate 32), {result['topic_partitions']} partitions. All figures ms, p50 / p95 / p99.",
        "",
        "| rate q/s | path | n | errors | completion q/s | sustained | TTFT | total | stage compute | overhead "
        "(total - compute) | TTFT overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for path in ("kafka", "inprocess"):
            r = run.get(path)
            if r is None:
                continue
            lines.append(
                f"| {r['offered_rate']:g} | {path} | {r['requests']} | {r['errors']} | {r['completion_rate']} | "
                f"{'yes' if r['sustained'] else 'no'} (x{r['backlog_growth']}) | {fmt(r['ttft_ms'])} | "
                f"{fmt(r['total_ms'])} | {fmt(r['stage_compute_ms'])} | {fmt(r['overhead_ms'])} | "
                f"{fmt(r['ttft_overhead_ms'])} |"
            )
    lines += ["", "Per-stage p50 / p99 (ms) as the stage measured itself:", ""]
    lines.append("| rate q/s | path | " + " | ".join(STAGES) + " |")
    lines.append("|---|---|" + "---|" * len(STAGES))
    for run in result["runs"]:
        for path in ("kafka", "inprocess"):
            r = run.get(path)
            if r is None:
                continue
            cells = [f"{r['stages_ms'][k]['p50']:.1f} / {r['stages_ms'][k]['p99']:.1f}" for k in STAGES]
            lines.append(f"| {r['offered_rate']:g} | {path} | " + " | ".join(cells) + " |")
    lines += ["", "Bus cost (Kafka / in-process):", ""]
    lines.append("| rate q/s | total p50 | total p99 | TTFT p50 | TTFT p99 |")
    lines.append("|---|---|---|---|---|")
    for run in result["runs"]:
        if "ratio" in run:
            c = run["ratio"]
            lines.append(
                f"| {run['rate']:g} | {c['total_p50']}x | {c['total_p99']}x | {c['ttft_p50']}x | {c['ttft_p99']}x |"
            )
    lines += ["", result["verdict"], "", f"Max sustained rate (Kafka path, rates tried): {result['max_sustained']}"]
    lines += ["", "Peak RSS per service (MiB, process group, at the end of the run):", ""]
    for name, row in result["memory"].items():
        lines.append(f"- {name}: {row['peak_rss_mib']} (now {row['rss_mib']})")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    if not have_matplotlib():
        return
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if "kafka" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    labels, bottoms_done = [], 0
    for i, run in enumerate(runs):
        for j, path_name in enumerate(("kafka", "inprocess")):
            r = run.get(path_name)
            if r is None:
                continue
            x = i * 3 + j
            labels.append((x, f"{run['rate']:g}/s\n{path_name}"))
            bottom = 0.0
            for k, stage in enumerate((*PREPARE_STAGES, "generate")):
                value = r["stages_ms"][stage]["p50"]
                value = 0.0 if math.isnan(value) else value
                left.bar(x, value, bottom=bottom, color=f"C{k}", label=stage if bottoms_done == 0 else None)
                bottom += value
            left.bar(x, max(r["overhead_ms"]["p50"], 0.0), bottom=bottom, color="black", alpha=0.6,
                     label="overhead" if bottoms_done == 0 else None)  # fmt: skip
            bottoms_done += 1
    left.set_xticks([x for x, _ in labels], [t for _, t in labels], fontsize=8)
    left.set_ylabel("ms (p50 of each part)")
    left.set_title("Where the time goes (p50)")
    left.legend(fontsize=7)
    rates = [r["rate"] for r in runs]
    for key, style in (("p50", "o-"), ("p99", "s--")):
        kafka_values = [max(r["kafka"]["overhead_ms"][key], 0.1) for r in runs]
        right.plot(rates, kafka_values, style, label=f"Kafka overhead {key}")
        right.plot(
            rates, [max(r["inprocess"]["overhead_ms"][key], 0.1) for r in runs if "inprocess" in r], style,
            label=f"in-process overhead {key}", alpha=0.6,
        )  # fmt: skip
    right.axhline(GOAL_OVERHEAD_P99_MS, color="red", linestyle=":", label="goal p99 <= 25 ms")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("offered queries/s")
    right.set_ylabel("ms")
    right.set_title("Overhead (total - stage compute)")
    right.legend(fontsize=7)
    fig.suptitle(f"ragstream latency, {result['machine']['nproc']} cores, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from streams.agents._resources import Resources

    tenant = f"bench{uuid.uuid4().hex[:6]}"
    if args.no_docs:
        # One small page under another tenant, so the collection exists; the questions go to a tenant without
        # documents: retrieval finds nothing and the answer is the refusal (no rerank, no model call).
        corpus = await ingest_corpus(settings, f"{tenant}x", [PYDOCS / "faq" / "installed.html"])
        corpus["note"] = "questions asked as a tenant without documents"
    else:
        corpus = await ingest_corpus(settings, tenant)  # also proves the worker is up: it waits for the index acks
    await wait_worker(settings)
    pool = faq_questions()
    resources = Resources(settings)
    processor = None if args.skip_baseline else await resources.query()
    runs: list[dict[str, Any]] = []
    try:
        plan = [(rate, True) for rate in args.rates] + [(rate, False) for rate in args.probe_rates]
        for n, (rate, with_baseline) in enumerate(plan):
            count = max(1, min(args.max_requests, round(rate * args.duration)))
            schedule = arrivals(rate, count, seed=n)
            questions = [pool[(i * 7 + n) % len(pool)] for i in range(count)]
            print(f"\n== {rate:g} q/s: {count} requests over ~{schedule[-1]:.1f}s (Kafka) ...", flush=True)
            kafka = summarize(await run_kafka(settings, questions, schedule, args.max_tokens, tenant, args.drain), rate)
            run: dict[str, Any] = {"rate": rate, "kafka": kafka}
            print(f"   kafka      TTFT {fmt(kafka['ttft_ms'])}  total {fmt(kafka['total_ms'])}  "
                  f"overhead {fmt(kafka['overhead_ms'])}  errors {kafka['errors']}  sustained {kafka['sustained']}",
                  flush=True)  # fmt: skip
            if processor is not None and with_baseline:
                await asyncio.sleep(2.0)
                local = summarize(
                    await run_inprocess(processor, settings, questions, schedule, args.max_tokens, tenant), rate
                )
                run["inprocess"] = local
                run["ratio"] = compare(kafka, local)
                print(f"   in-process TTFT {fmt(local['ttft_ms'])}  total {fmt(local['total_ms'])}  "
                      f"overhead {fmt(local['overhead_ms'])}  errors {local['errors']}  sustained {local['sustained']}",
                      flush=True)  # fmt: skip
                print(f"   bus cost   {run['ratio']}", flush=True)
            runs.append(run)
            await asyncio.sleep(2.0)
    finally:
        await resources.close()
    return {"corpus": corpus, "questions": len(pool), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 10.0, 50.0])
    parser.add_argument("--probe-rates", type=lambda s: [float(x) for x in s.split(",") if x], default=[],
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
    load_start = os.getloadavg()
    started = time.monotonic()
    with bench_stack(args.reuse_env, ["worker"], request_timeout_s=300.0) as settings:
        measured = asyncio.run(measure(args, settings))
        memory = service_memory(settings)
    result: dict[str, Any] = header(load_start)
    result.update(measured)
    result.update(
        {
            "max_tokens": args.max_tokens,
            "topic_partitions": settings.topic_partitions,
            "memory": memory,
            "wall_s": round(time.monotonic() - started, 1),
            "args": {k: v for k, v in vars(args).items()},
        }
    )
    sustained = [r["rate"] for r in result["runs"] if r["kafka"]["sustained"]]
    result["max_sustained"] = f"{max(sustained):g} q/s" if sustained else "none of the rates tried"
    at50 = next((r for r in result["runs"] if r["rate"] == 50.0), None)
    if at50 is not None:
        p99 = at50["kafka"]["overhead_ms"]["p99"]
        met = p99 <= GOAL_OVERHEAD_P99_MS
        result["goal_met"] = met
        result["verdict"] = (
            f"Goal overhead p99 <= {GOAL_OVERHEAD_P99_MS:g} ms at 50 q/s: {'MET' if met else 'NOT MET'} "
            f"(measured {p99:.1f} ms; 50 q/s {'was' if at50['kafka']['sustained'] else 'was NOT'} sustained)."
        )
    else:
        result["verdict"] = "50 q/s was not run: the overhead goal was not evaluated."
    for run in result["runs"]:
        for key in ("kafka", "inprocess"):
            if key in run:
                run[key] = dict(run[key])
    json_path, md_path = write_results("latency-nodocs" if args.no_docs else "latency", result, markdown(result))
    plot(result, plot_path(json_path))
    print("\n" + markdown(result))
    print(f"results: {json_path}\n         {md_path}")


if __name__ == "__main__":
    main()
