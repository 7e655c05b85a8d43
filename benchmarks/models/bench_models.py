"""CPU models served by Triton vs the same models called in-process, in one run.

For each chat model: time to first token and decode tokens/s per stream for 1, 4 and 16 concurrent streams (and
total tokens/s); for the embedder: texts/s. The in-process half runs ``inprocess.py`` under the model environment
(``.venv-triton``; the app environment has no torch) with the same engine code the Triton models use.

    python benchmarks/models/bench_models.py --start          # private Triton on free ports in a temp dir
    python benchmarks/models/bench_models.py --url HOST:PORT  # an already running Triton

Results: figures and ratios printed, and JSON + Markdown under benchmarks/results/models/ (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from infra.settings import REPO_ROOT, Settings
from processors.adapters.chat_formats import render_chat
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.triton import TritonClient
from processors.generation import ChatMessage, GenerationParams, StreamStats
from processors.reporting.machine import describe_machine, machine_info

CHAT_MODELS = {"llm_small": "smollm2", "llm_large": "qwen2.5"}
QUESTIONS = [
    "What is Apache Kafka used for?",
    "Explain what a vector database does.",
    "Give three tips for writing clear documentation.",
    "Why do streaming systems partition their data?",
]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "models"


def summarize(stats: list[StreamStats], wall: float) -> dict[str, float]:
    ttft = [s.ttft_s for s in stats if s.ttft_s is not None]
    rates = [s.tokens_per_s for s in stats if s.tokens_per_s is not None]
    tokens = sum(s.chunks for s in stats)
    nan = float("nan")
    return {
        "ttft_s_mean": statistics.mean(ttft) if ttft else nan,
        "ttft_s_max": max(ttft) if ttft else nan,
        "tokens_per_s_per_stream": statistics.mean(rates) if rates else nan,
        "tokens_per_s_total": tokens / wall if wall > 0 else nan,
        "wall_s": wall,
        "tokens": tokens,
    }


async def triton_chat(client: TritonClient, model: str, concurrency: list[int], max_tokens: int) -> dict[str, Any]:
    prompts = [render_chat(model, [ChatMessage("user", q)]) for q in QUESTIONS]
    params = GenerationParams(max_tokens=max_tokens)

    async def one(i: int, stats: StreamStats) -> None:
        async for _ in client.generate(model, prompts[i % len(prompts)], params, stats=stats):
            pass

    await one(0, StreamStats(model=model, started=time.monotonic()))  # warm-up
    out: dict[str, Any] = {}
    for n in concurrency:
        start = time.monotonic()
        stats = [StreamStats(model=model, started=start) for _ in range(n)]
        await asyncio.gather(*(one(i, s) for i, s in enumerate(stats)))
        out[str(n)] = summarize(stats, time.monotonic() - start)
    return out


async def triton_embed(client: TritonClient, texts: list[str]) -> dict[str, float]:
    embedder = TritonEmbedder(client)
    await embedder.embed(texts[:8])
    start = time.monotonic()
    # Four concurrent callers of 64 texts: the dynamic batcher merges what arrives together.
    chunks = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    sem = asyncio.Semaphore(4)

    async def one(chunk: list[str]) -> np.ndarray[Any, Any]:
        async with sem:
            return await embedder.embed(chunk)

    await asyncio.gather(*(one(c) for c in chunks))
    wall = time.monotonic() - start
    return {"texts": len(texts), "wall_s": wall, "texts_per_s": len(texts) / wall}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not (np.isnan(a) or np.isnan(b)) else "n/a"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# CPU models: Triton vs in-process",
        "",
        f"Date: {report['date']}. Machine: {describe_machine(report['machine'])}; load average "
        f"{report['machine']['load_average']}. "
        f"torch threads per model: {report['threads']}; {report['max_tokens']} new tokens per stream.",
        "",
        "| model | streams | TTFT mean s (Triton / in-proc) | tok/s per stream (Triton / in-proc) | ratio "
        "| total tok/s (Triton / in-proc) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model in report["chat_models"]:
        for n, t in report["triton"][model].items():
            p = report["in_process"][model][n]
            lines.append(
                f"| {model} | {n} | {t['ttft_s_mean']:.3f} / {p['ttft_s_mean']:.3f} "
                f"| {t['tokens_per_s_per_stream']:.1f} / {p['tokens_per_s_per_stream']:.1f} "
                f"| {ratio(t['tokens_per_s_per_stream'], p['tokens_per_s_per_stream'])} "
                f"| {t['tokens_per_s_total']:.1f} / {p['tokens_per_s_total']:.1f} |"
            )
    te, pe = report["triton"]["embedder"], report["in_process"]["embedder"]
    lines += [
        "",
        f"Embedder ({te['texts']} texts): Triton {te['texts_per_s']:.0f} texts/s, in-process "
        f"{pe['texts_per_s']:.0f} texts/s (ratio {ratio(te['texts_per_s'], pe['texts_per_s'])}).",
        "",
    ]
    return "\n".join(lines)


async def triton_part(
    url: str, models: list[str], concurrency: list[int], max_tokens: int, texts: list[str]
) -> dict[str, Any]:
    client = TritonClient(url, timeout_s=600.0)
    try:
        out: dict[str, Any] = {"embedder": await triton_embed(client, texts)}
        for model in models:
            out[model] = await triton_chat(client, model, concurrency, max_tokens)
        return out
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="", help="Triton gRPC address (default: from RAGSTREAM_* settings)")
    parser.add_argument("--start", action="store_true", help="start a private Triton for the run")
    parser.add_argument("--models", default="llm_small,llm_large")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    concurrency = [int(n) for n in args.concurrency.split(",")]
    texts = [f"Sentence number {i} about streaming retrieval-augmented generation on Kafka." for i in range(args.texts)]
    settings = Settings.from_env()
    stack = None
    if args.start:
        from infra.stack import Stack, free_ports

        http, grpc = free_ports(2)
        data_dir = tempfile.mkdtemp(prefix="bench-models-")
        settings = settings.with_changes(
            data_dir=data_dir,
            triton_http_port=http,
            triton_grpc_port=grpc,
            triton_load_models=",".join(["embedder", *models]),
            start_timeout_s=300.0,
        )
        stack = Stack(settings)
        stack.up(["triton"])
    url = args.url or settings.triton_address
    try:
        served = asyncio.run(triton_part(url, models, concurrency, args.max_tokens, texts))
    finally:
        if stack is not None:
            stack.down(["triton"])  # free the cores before the in-process half
    spec = {
        "threads": args.threads,
        "texts": texts,
        "concurrency": concurrency,
        "max_tokens": args.max_tokens,
        "chat_models": {m: CHAT_MODELS[m] for m in models},
        "prompts": {m: [render_chat(m, [ChatMessage("user", q)]) for q in QUESTIONS] for m in models},
    }
    result = subprocess.run(
        [str(settings.triton_python), str(Path(__file__).with_name("inprocess.py"))],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"in-process half failed:\n{result.stderr[-4000:]}")
    in_process = json.loads(result.stdout.strip().splitlines()[-1])
    now = dt.datetime.now(dt.UTC)
    report = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine_info(),  # the load average says how contended a shared machine was
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "chat_models": models,
        "triton": served,
        "in_process": in_process,
    }
    text = markdown(report)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"models-{now.strftime('%Y%m%dT%H%M%SZ')}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{stem}.md").write_text(text)
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
