"""Interactive speed as a person on the WebSocket bridge sees it, with the real CPU models (issue 14's first goal).

Questions arrive at each of ``--rates`` per second (Poisson), each from its own WebSocket client, and go the whole way:
bridge, Kafka, the worker (input guard, embed, retrieve, rerank, prompt), the model in Triton, the output guard and
back. The cache is off, the prompt is the pipeline's default RAG prompt (``retrieve_k`` candidates reranked,
``rerank_k`` passages in the prompt), greedy decoding, ``--max-tokens`` at most. Each model and rate gets its own
round, one after the other: ``llm_small``, then ``llm_large`` when Triton serves it; the goal's 1 q/s, then a light
0.2 q/s that shows what one question costs when it rarely meets another.

Per answer: time to first token as the client sees it (ask sent -> first token frame), the decode speed the worker
timed (tokens after the first / time after the first), the prompt's token count and every stage's time from the
``done`` message. The goals (``processors/reporting/bench_sections.py``): with ``llm_small`` TTFT p50 < 500 ms and
p95 < 800 ms, > 30 tokens/s per stream; ``llm_large`` > 15 tokens/s; rerank p50 <= 60 ms; retrieve p50 <= 30 ms at
20k chunks (the corpus size is reported beside it), all judged at 1 q/s.

    python benchmarks/pipeline/bench_interactive.py                       # private stack, FAQ + tutorial
    python benchmarks/pipeline/bench_interactive.py --corpus faq,tutorial,library,reference,howto
    python benchmarks/pipeline/bench_interactive.py --reuse-env           # the stack, worker and bridge of RAGSTREAM_*

``benchmarks/run_all.py`` runs it as its "interactive" part. Results: summary.json and summary.md under
benchmarks/results/pipeline/interactive-<stamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
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
    publish,
    service_memory,
    stamped_dir,
    wait_worker,
)
from bench_latency import STACK_OVERRIDES, arrivals

from infra.settings import Settings
from processors.evaluation.metrics import decode_tokens_per_s
from processors.reporting.bench_sections import STAGES
from processors.reporting.machine import run_facts

MODELS = ("llm_small", "llm_large")


@dataclass
class InteractiveConfig:
    models: list[str] = field(default_factory=lambda: list(MODELS))
    rates: list[float] = field(default_factory=lambda: [1.0, 0.2])
    requests: int = 20  # per model and rate
    max_tokens: int = 64
    timeout_s: float = 300.0  # per answer, from the ask (the stack's request timeout is raised to match)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> InteractiveConfig:
        """From this script's options or run_all's (``interactive_*``)."""
        return cls(
            models=list(args.interactive_models),
            rates=list(args.interactive_rates),
            requests=args.interactive_requests,
            max_tokens=args.interactive_max_tokens,
        )


@dataclass
class Answer:
    question: str
    scheduled_s: float
    ttft_ms: float | None = None
    total_ms: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = ""
    error: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        return decode_tokens_per_s(self.completion_tokens, self.timings)


async def ask(url: str, api_key: str, answer: Answer, model: str, max_tokens: int, timeout_s: float) -> None:
    """One client: connect, ask once with the cache off, read frames until ``done`` or ``error``."""
    from websockets.asyncio.client import connect

    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {api_key}"}, proxy=None) as ws:
            sent = time.perf_counter()
            options = {"model": model, "max_tokens": max_tokens, "use_cache": False}
            await ws.send(json.dumps({"type": "ask", "id": "q", "question": answer.question, "options": options}))
            async with asyncio.timeout(timeout_s):
                async for frame in ws:
                    message = json.loads(frame)
                    kind = message.get("type")
                    if kind == "token" and answer.ttft_ms is None:
                        answer.ttft_ms = (time.perf_counter() - sent) * 1000
                    elif kind == "done":
                        answer.total_ms = (time.perf_counter() - sent) * 1000
                        answer.timings = dict(message.get("timings_ms") or {})
                        usage = message.get("usage") or {}
                        answer.prompt_tokens = int(usage.get("prompt_tokens", 0))
                        answer.completion_tokens = int(usage.get("completion_tokens", 0))
                        answer.finish = str(message.get("finish_reason", ""))
                        return
                    elif kind == "error":
                        answer.error = f"{message.get('code')}: {str(message.get('message', ''))[:100]}"
                        return
            answer.error = "connection closed before done"
    except TimeoutError:
        answer.error = f"no done within {timeout_s:.0f} s"
    except Exception as exc:  # refused, reset: counted as this answer's error
        answer.error = f"{type(exc).__name__}: {exc}"[:160]


def summarize(model: str, rate: float, answers: list[Answer], wall_s: float) -> dict[str, Any]:
    """One round: counts, client-side TTFT, decode speed, prompt size and each stage's distribution."""
    done = [a for a in answers if a.total_ms is not None and not a.error]
    generated = [a for a in done if a.finish in ("stop", "length")]
    return {
        "model": model,
        "rate": rate,
        "requests": len(answers),
        "done": len(done),
        "generated": len(generated),  # answers the model wrote (not refusals or blocks)
        "errors": len(answers) - len(done),
        "error_examples": sorted({a.error for a in answers if a.error})[:3],
        "finish_reasons": {r: sum(1 for a in done if a.finish == r) for r in sorted({a.finish for a in done})},
        "ttft_ms": dist([a.ttft_ms for a in generated if a.ttft_ms is not None]),
        "total_ms": dist([a.total_ms for a in generated if a.total_ms is not None]),
        "tokens_per_s": dist([t for a in generated if (t := a.tokens_per_s) is not None]),
        "prompt_tokens": dist([float(a.prompt_tokens) for a in generated if a.prompt_tokens]),
        "completion_tokens": dist([float(a.completion_tokens) for a in generated]),
        "stages_ms": {s: dist([a.timings[s] for a in generated if s in a.timings]) for s in STAGES},
        "wall_s": round(wall_s, 1),
    }


async def measure(settings: Settings, config: InteractiveConfig) -> list[dict[str, Any]]:
    """Every model's round on a running stack with a worker and a bridge; the first API key's tenant must hold the
    corpus. A model Triton does not serve is reported as skipped, not failed."""
    from processors.adapters.triton import TritonClient
    from streams.bridge.auth import parse_api_keys

    url = f"ws://127.0.0.1:{settings.bridge_port}/"
    api_key = next(iter(parse_api_keys(settings.api_keys)))
    pool = faq_questions()
    triton = TritonClient(settings.triton_address, timeout_s=30.0)
    try:
        served = {m: await triton.is_ready(m) for m in config.models}
    finally:
        await triton.close()

    async def one(answer: Answer, model: str, start: float) -> None:
        await asyncio.sleep(max(0.0, start + answer.scheduled_s - time.perf_counter()))
        await ask(url, api_key, answer, model, config.max_tokens, config.timeout_s)

    rounds = []
    for n, model in enumerate(config.models):
        if not served[model]:
            print(f"\n== {model}: not served by Triton, skipped", flush=True)
            rounds.append({"model": model, "skipped": "not served by Triton"})
            continue
        for m, rate in enumerate(config.rates):
            questions = [pool[(i * 7 + 3 * n + 5 * m) % len(pool)] for i in range(config.requests)]
            schedule = arrivals(rate, config.requests, seed=14)
            answers = [Answer(q, s) for q, s in zip(questions, schedule, strict=True)]
            print(f"\n== {model}: {config.requests} questions at {rate:g} q/s over the bridge ...", flush=True)
            start = time.perf_counter()
            await asyncio.gather(*(one(a, model, start) for a in answers))
            summary = summarize(model, rate, answers, time.perf_counter() - start)
            ttft, speed = summary["ttft_ms"], summary["tokens_per_s"]
            print(f"   done {summary['done']}/{summary['requests']}, errors {summary['errors']}; TTFT p50 / p95 "
                  f"{ttft['p50']:.0f} / {ttft['p95']:.0f} ms; {speed['p50']:.1f} tokens/s p50", flush=True)  # fmt: skip
            rounds.append(summary)
            await asyncio.sleep(5.0)  # the last answers' decoding ends before the next round
    return rounds


def build_summary(rounds: list[dict[str, Any]], measured: Measured) -> dict[str, Any]:
    """The "interactive" summary the report renders."""
    return measured.summary(
        "interactive",
        "Interactive speed over the WebSocket bridge (real models)",
        rates=measured.config.rates,
        rounds=rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactive-models", "--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--interactive-rates", "--rates", type=floats, default=[1.0, 0.2], help="questions per second")
    parser.add_argument("--interactive-requests", "--requests", type=int, default=20, help="per model and rate")
    parser.add_argument("--interactive-max-tokens", "--max-tokens", type=int, default=64)
    parser.add_argument("--corpus", default="faq,tutorial", help="folders of the Python docs to ingest")
    parser.add_argument("--reuse-env", action="store_true", help="use the stack + worker + bridge from RAGSTREAM_*")
    args = parser.parse_args()
    config = InteractiveConfig.from_args(args)
    facts = run_facts()
    models = f"embedder,embedder_bulk,reranker,llm_echo,{','.join(config.models)}"
    overrides = {**STACK_OVERRIDES, "triton_load_models": models}
    with bench_stack(args.reuse_env, ["worker", "bridge"], **overrides) as settings:

        async def run() -> dict[str, Any]:
            corpus = {"note": "the running stack's own corpus"}
            if not args.reuse_env:
                corpus = await ingest_corpus(settings, "default", [PYDOCS / d for d in args.corpus.split(",") if d])
            await wait_worker(settings)
            started = time.monotonic()
            rounds = await measure(settings, config)
            measured = Measured(config, settings, corpus, service_memory(settings), time.monotonic() - started)
            return build_summary(rounds, measured)

        summary = {**facts, **asyncio.run(run())}
    publish(stamped_dir(RESULTS, "interactive"), "Interactive speed over the WebSocket bridge", summary)


if __name__ == "__main__":
    main()
