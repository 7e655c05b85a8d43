"""One command, one report: the evaluation, interactive speed, the latency breakdown and the concurrency test on one
private stack.

    python benchmarks/run_all.py              # the whole report (long on 2 cores: the eval answers with llm_small)
    python benchmarks/run_all.py --quick      # a smoke run of every part in minutes
    ragstream bench [--quick ...]             # the same, from the CLI

Starts one private stack on free ports in a temp dir (Kafka, Redis, Milvus, Triton with embedder, reranker,
llm_echo, the eval's model and the interactive part's; a worker and the WebSocket bridge, like the pipeline
benchmarks), ingests the Python docs once through Kafka into tenant "default", then runs, in this order:

1. the eval (``streams.clients.evaluation.evaluate``): the golden set through the real pipeline with the cache off,
   scored, plus the retrieval comparison (dense, BM25, hybrid, each reranked); first, before any load test leaves
   a backlog;
2. interactive (``bench_interactive.measure``): the real chat models over the WebSocket bridge at 1 q/s, one at a
   time (time to first token, decode speed, the rerank and retrieve stages);
3. latency (``bench_latency.measure``): each rate through Kafka, then the same arrivals in-process;
4. concurrency (``bench_concurrency.measure``): N WebSocket clients asking at once; last, because its largest level
   can leave unfinished requests queued.

A part that fails is reported as failed (the others still run). The stack is stopped by PID (``Stack.down``, which
terminates the worker and bridge it started) whatever happens. Results: ``benchmarks/results/report/<UTC stamp>/``
with summary.json, summary.md (machine, date, commit, load average, the goals with verdicts, every figure), the PNG
figures and one JSON per eval case under ``eval-cases/``. ``ragstream eval report <that folder> --out DIR`` renders
it again.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "pipeline"))

import bench_concurrency as concurrency
import bench_interactive as interactive
import bench_latency as latency
from _common import (
    BENCH_MODELS,
    PYDOCS,
    Measured,
    bench_stack,
    floats,
    ingest_corpus,
    ints,
    publish,
    service_memory,
    stamped_dir,
    wait_worker,
)

from infra.settings import REPO_ROOT, Settings
from processors.evaluation.metrics import PassRule
from processors.reporting.bench_sections import goals_summary
from processors.reporting.machine import load_average, run_facts
from streams.clients.evaluation import EvalConfig, as_json, evaluate, write_cases

REPORTS = REPO_ROOT / "benchmarks" / "results" / "report"
GOLDEN = REPO_ROOT / "benchmarks" / "eval" / "golden" / "python_faq.jsonl"
TENANT = "default"  # the bridge's dev key maps to it, so the WebSocket clients ask the same index
PARTS = ("eval", "interactive", "latency", "concurrency")

# The figures, and a smoke run of every part; an option given on the command line wins over either.
FULL: dict[str, Any] = {
    "rates": [1.0, 10.0, 50.0],
    "max_requests": 40,
    "duration": 12.0,
    "levels": [1, 100, 1000],
    "no_docs_levels": [1000],
    "corpus": "faq,tutorial",
    "retrieve_k": None,  # the pipeline's default
    # Answers for 40 cases spread over the golden set (llm_small on 2 CPU cores: ~5 min); retrieval is judged on
    # every case whenever answers are sampled. --eval-limit 203 answers the whole FAQ set (~1 h here).
    "eval_limit": 40,
    "eval_model": "llm_small",
    "eval_max_tokens": 96,
    "eval_concurrency": 2,
    # Issue 14's interactive goals: the real models over the bridge at 1 q/s (llm_large only where it is served).
    "interactive_models": ["llm_small", "llm_large"],
    "interactive_rates": [1.0, 0.2],
    "interactive_requests": 20,
    "interactive_max_tokens": 64,
}
QUICK: dict[str, Any] = {
    "rates": [1.0, 10.0],
    "max_requests": 6,
    "duration": 6.0,
    "levels": [1, 20],
    "no_docs_levels": [20],
    "corpus": "faq",
    "retrieve_k": 5,
    "eval_limit": 10,
    "eval_model": "llm_echo",
    "eval_max_tokens": 32,
    "eval_concurrency": 4,
    "interactive_models": ["llm_echo"],
    "interactive_rates": [1.0],
    "interactive_requests": 3,
    "interactive_max_tokens": 16,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
    )
    parser.add_argument(
        "--skip",
        type=lambda s: [p for p in s.split(",") if p],
        default=[],
        help=f"parts to leave out, comma-separated: {','.join(PARTS)}",
    )
    parser.add_argument("--rates", type=floats, help="latency: offered queries/s (full: 1,10,50)")
    parser.add_argument("--max-requests", type=int, help="latency: requests per rate, at most (full: 40)")
    parser.add_argument("--duration", type=float, help="latency: seconds of arrivals per rate, at most (full: 12)")
    parser.add_argument("--drain", type=float, default=120.0, help="latency: seconds to wait for any answer event")
    parser.add_argument("--max-tokens", type=int, default=16, help="latency and concurrency: llm_echo tokens")
    parser.add_argument("--levels", type=ints, help="concurrency: clients per level (full: 1,100,1000)")
    parser.add_argument("--no-docs-levels", type=ints, help="concurrency: levels also run as a tenant without docs")
    parser.add_argument("--timeout", type=float, default=150.0, help="concurrency: seconds per level")
    parser.add_argument("--handshakes", type=int, default=100, help="concurrency: WebSocket handshakes in flight")
    parser.add_argument("--corpus", help="folders of the Python 3.11 HTML docs to ingest (full: faq,tutorial)")
    parser.add_argument("--retrieve-k", type=int, help="candidates reranked per query (full: the pipeline's 20)")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="eval: golden set")
    parser.add_argument("--eval-limit", type=int, help="eval: cases answered, spread over the set (full: 40)")
    parser.add_argument("--eval-model", help="eval: the model that answers (full: llm_small)")
    parser.add_argument("--eval-max-tokens", type=int, help="eval: answer length (full: 96)")
    parser.add_argument("--eval-concurrency", type=int, help="eval: questions in flight (full: 2)")
    parser.add_argument("--eval-timeout", type=float, default=300.0, help="eval: seconds to wait for each answer")
    parser.add_argument(
        "--interactive-models", type=lambda s: [m for m in s.split(",") if m], help="interactive: models, in turn"
    )
    parser.add_argument("--interactive-rates", type=floats, help="interactive: questions per second (full: 1,0.2)")
    parser.add_argument("--interactive-requests", type=int, help="interactive: questions per model and rate (full: 20)")
    parser.add_argument("--interactive-max-tokens", type=int, help="interactive: answer length (full: 64)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="results root (a UTC-stamped folder inside)")
    parser.add_argument("--reuse-env", action="store_true", help="use the stack + worker + bridge from RAGSTREAM_*")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.skip) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; parts: {', '.join(PARTS)}")
    return args


def configs(args: argparse.Namespace) -> tuple[latency.LatencyConfig, concurrency.ConcurrencyConfig, EvalConfig]:
    """The three parts' settings from one set of options."""
    ev = EvalConfig(
        golden=args.golden,
        tenant=TENANT,
        limit=args.eval_limit,
        model=args.eval_model,
        use_cache=False,  # the load tests' llm_echo answers must not be served as the eval model's
        max_tokens=args.eval_max_tokens,
        concurrency=args.eval_concurrency,
        timeout_s=args.eval_timeout,
        rule=PassRule(),
    )
    return latency.LatencyConfig.from_args(args), concurrency.ConcurrencyConfig.from_args(args), ev


def models(args: argparse.Namespace) -> str:
    """What Triton loads: the query path's models with llm_echo, the eval's model when the eval runs and the
    interactive part's models when it runs."""
    names = BENCH_MODELS.split(",")
    optional = list(args.interactive_models) if "interactive" not in args.skip else []
    configured = Settings.from_env().triton_load_models.strip()
    if configured not in ("", "*"):  # a machine set up without a model names the ones it has; the others are skipped
        optional = [m for m in optional if m in {c.strip() for c in configured.split(",")}]
    wanted = ([args.eval_model] if "eval" not in args.skip else []) + optional
    names += [m for m in dict.fromkeys(wanted) if m not in names]
    return ",".join(names)


class Parts:
    """Runs each part, timing it; a failure is recorded (and printed) instead of ending the run."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {}

    async def run(self, name: str, part: Callable[[], Awaitable[Any]]) -> None:
        print(f"\n===== {name} =====", flush=True)
        started = time.monotonic()
        try:
            self.results[name] = await part()
            self.outcomes[name] = {"seconds": round(time.monotonic() - started, 1)}
        except Exception as exc:  # the other parts still run and the report says what failed
            traceback.print_exc()
            self.outcomes[name] = {
                "seconds": round(time.monotonic() - started, 1),
                "error": f"{type(exc).__name__}: {exc}",
            }


async def measure_all(settings: Settings, args: argparse.Namespace, parts: Parts) -> dict[str, Any]:
    """Ingest once, then every part that is not skipped; returns the corpus facts."""
    lat_config, conc_config, eval_config = configs(args)
    dirs = [PYDOCS / name for name in args.corpus.split(",") if name]
    started = time.monotonic()
    corpus = await ingest_corpus(settings, TENANT, dirs)
    await wait_worker(settings)
    parts.outcomes["ingest"] = {"seconds": round(time.monotonic() - started, 1)}

    Build = Callable[[list[dict[str, Any]], Measured], dict[str, Any]]

    async def timed(config: Any, measure: Awaitable[list[dict[str, Any]]], build: Build) -> dict[str, Any]:
        t0 = time.monotonic()
        results = await measure
        return build(results, Measured(config, settings, corpus, service_memory(settings), time.monotonic() - t0))

    inter_config = interactive.InteractiveConfig.from_args(args)
    plan: dict[str, Callable[[], Awaitable[Any]]] = {
        "eval": lambda: evaluate(settings, eval_config),
        "interactive": lambda: timed(
            inter_config, interactive.measure(settings, inter_config), interactive.build_summary
        ),
        "latency": lambda: timed(lat_config, latency.measure(settings, lat_config, TENANT), latency.build_summary),
        "concurrency": lambda: timed(
            conc_config, concurrency.measure(settings, conc_config), concurrency.build_summary
        ),
    }
    for name, part in plan.items():
        if name not in args.skip:
            await parts.run(name, part)
    return corpus


def assemble(
    facts: dict[str, Any],
    *,
    command: str,
    settings: Settings,
    corpus: dict[str, Any],
    outcomes: dict[str, dict[str, Any]],
    wall_s: float,
    load_average_end: list[float],
    latency_summary: dict[str, Any] | None = None,
    concurrency_summary: dict[str, Any] | None = None,
    eval_summary: dict[str, Any] | None = None,
    interactive_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary (kind "benchmarks"): what ran and how, then the goals judged from the parts' summaries,
    then each part's own summary (nested, so the report renders each as a section)."""
    return {
        **facts,
        "kind": "benchmarks",
        "title": "How this report was made",
        "command": command,
        "tenant": TENANT,
        "stack": {
            "models": settings.triton_load_models,
            "topic_partitions": settings.topic_partitions,
            "search_mode": settings.search_mode,
            "retrieve_k": settings.retrieve_k,
            "rerank_k": settings.rerank_k,
        },
        "corpus": corpus,
        "parts": outcomes,
        "wall_s": round(wall_s, 1),
        "load_average_end": load_average_end,
        "goals": goals_summary(
            latency=latency_summary,
            concurrency=concurrency_summary,
            evaluation=eval_summary,
            interactive=interactive_summary,
            complete=True,
        ),
        "eval": eval_summary,
        "interactive": interactive_summary,
        "latency": latency_summary,
        "concurrency": concurrency_summary,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    _, conc_config, _ = configs(args)
    if "concurrency" not in args.skip:
        concurrency.prepare_process(conc_config)
    overrides = {
        **latency.STACK_OVERRIDES,
        **concurrency.stack_overrides(conc_config),
        "triton_load_models": models(args),
    }
    facts = run_facts()
    started = time.monotonic()
    parts = Parts()
    with bench_stack(args.reuse_env, ["worker", "bridge"], **overrides) as settings:
        corpus = asyncio.run(measure_all(settings, args, parts))
        load_end = load_average()
    evaluated = parts.results.get("eval")
    summary = assemble(
        facts,
        command=command,
        settings=settings,
        corpus=corpus,
        outcomes=parts.outcomes,
        wall_s=time.monotonic() - started,
        load_average_end=load_end,
        latency_summary=parts.results.get("latency"),
        concurrency_summary=parts.results.get("concurrency"),
        eval_summary=as_json(evaluated[0]) if evaluated else None,
        interactive_summary=parts.results.get("interactive"),
    )
    out = stamped_dir(args.out)
    if evaluated:
        write_cases(out / "eval-cases", evaluated[1])
    publish(out, "ragstream benchmarks and evaluation", summary)
    failed = [name for name, outcome in parts.outcomes.items() if "error" in outcome]
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
