"""Concurrent WebSocket clients through the bridge: 1, 100 and 1000 clients, each asking one question at once.

For each level the benchmark opens N loopback WebSocket connections to ``ragstream bridge`` (bounded handshake
concurrency), waits until all are open, then every client sends one ``ask`` (``llm_echo``, ``--max-tokens``) at the
same moment and reads its stream. Per level: answers completed, errors, connection failures, mixed-up answers (a
token or done carrying another request id than the client's ``accepted``, or tokens that do not join to the client's
own ``done.text``: must be 0), TTFT and total time distributions, and peak RSS of every service (worker, bridge,
kafka, triton with its Python model stubs, redis, milvus), sampled every second from the PID files in
``<data_dir>/run`` and their process groups.

    python benchmarks/pipeline/bench_concurrency.py                    # private stack, ~6-8 minutes
    python benchmarks/pipeline/bench_concurrency.py --levels 1,100     # quicker
    python benchmarks/pipeline/bench_concurrency.py --reuse-env        # stack + worker + bridge from RAGSTREAM_*
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYDOCS,
    MemorySampler,
    bench_stack,
    dist,
    faq_questions,
    have_matplotlib,
    header,
    ingest_corpus,
    machine_line,
    plot_path,
    raise_nofile,
    service_memory,
    wait_worker,
    write_results,
)
from websockets.asyncio.client import ClientConnection, connect

from infra.settings import Settings


@dataclass
class Client:
    index: int
    question: str
    ws: ClientConnection | None = None
    connect_error: str = ""
    request_id: str = ""
    tokens: list[str] = field(default_factory=list)
    sent: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    done_text: str | None = None
    finish: str = ""
    error: str = ""
    mixed: list[str] = field(default_factory=list)


async def open_client(client: Client, url: str, api_key: str, gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            client.ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {api_key}"},
                open_timeout=60,
                max_queue=None,
                proxy=None,
            )
        except Exception as exc:  # refused, 503 over the connection limit, timeout: counted, not fatal
            client.connect_error = f"{type(exc).__name__}: {exc}"[:160]


async def converse(client: Client, start: asyncio.Event, max_tokens: int) -> None:
    ws = client.ws
    assert ws is not None
    await start.wait()
    ident = f"c{client.index}"
    client.sent = time.perf_counter()
    ask = {"type": "ask", "id": ident, "question": client.question,
           "options": {"model": "llm_echo", "max_tokens": max_tokens}}  # fmt: skip
    try:
        await ws.send(json.dumps(ask))
        async for frame in ws:
            now = time.perf_counter()
            message = json.loads(frame)
            kind = message.get("type")
            if kind == "accepted":
                if message.get("id") != ident:
                    client.mixed.append(f"accepted for {message.get('id')}")
                client.request_id = message["request_id"]
                continue
            rid = message.get("request_id")
            if rid is not None and rid != client.request_id:
                client.mixed.append(f"{kind} of request {rid} on the socket of {client.request_id or '?'}")
            if kind == "token":
                if client.ttft_ms is None:
                    client.ttft_ms = (now - client.sent) * 1000
                client.tokens.append(message["text"])
            elif kind == "done":
                client.total_ms = (now - client.sent) * 1000
                client.done_text = message["text"]
                client.finish = message["finish_reason"]
                if "".join(client.tokens) != client.done_text:
                    client.mixed.append("tokens do not join to done.text")
                return
            elif kind == "error":
                client.error = f"{message.get('code')}: {message.get('message', '')[:100]}"
                return
        client.error = "connection closed before done"
    except Exception as exc:
        client.error = f"{type(exc).__name__}: {exc}"[:160]


async def close_all(clients: list[Client]) -> None:
    async def close(c: Client) -> None:
        if c.ws is not None:
            try:
                await asyncio.wait_for(c.ws.close(), 10)
            except Exception:  # closing is best effort; the bridge cleans up either way
                return

    await asyncio.gather(*(close(c) for c in clients))


async def level(
    settings: Settings,
    n: int,
    questions: list[str],
    max_tokens: int,
    timeout_s: float,
    handshakes: int,
    api_key: str,
    path: str,
) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{settings.bridge_port}/"
    clients = [Client(i, questions[i % len(questions)]) for i in range(n)]
    sampler = MemorySampler(settings)
    sampler.start()
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(handshakes)
    await asyncio.gather(*(open_client(c, url, api_key, gate) for c in clients))
    connect_s = time.perf_counter() - t0
    connected = [c for c in clients if c.ws is not None]
    print(f"   {len(connected)}/{n} connected in {connect_s:.1f}s", flush=True)
    start = asyncio.Event()
    tasks = [asyncio.create_task(converse(c, start, max_tokens)) for c in connected]
    began = time.perf_counter()
    start.set()
    _, pending = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - began
    await close_all(clients)
    peak = await sampler.stop()
    done = [c for c in connected if c.done_text is not None and not c.error]
    unfinished = [c for c in connected if c.done_text is None and not c.error]
    mixed = [c for c in connected if c.mixed]
    errors = [c for c in connected if c.error]
    return {
        "clients": n,
        "path": path,
        "connected": len(connected),
        "connect_failures": n - len(connected),
        "connect_failure_examples": sorted({c.connect_error for c in clients if c.connect_error})[:3],
        "connect_s": round(connect_s, 2),
        "completed": len(done),
        "errors": len(errors),
        "error_examples": sorted({c.error for c in errors})[:3],
        "unfinished_at_timeout": len(unfinished),
        "mixed_up": len(mixed),
        "mixed_examples": [m for c in mixed[:3] for m in c.mixed[:2]],
        "finish_reasons": {r: sum(1 for c in done if c.finish == r) for r in sorted({c.finish for c in done})},
        "wall_s": round(wall, 2),
        "answers_per_s": round(len(done) / wall, 2) if wall > 0 else 0.0,
        "ttft_ms": dist([c.ttft_ms for c in done if c.ttft_ms is not None]),
        "total_ms": dist([c.total_ms for c in done if c.total_ms is not None]),
        "ttft_all_ms": sorted(round(c.ttft_ms, 1) for c in done if c.ttft_ms is not None),
        "peak_rss_mib": peak,
    }


def fmt(d: dict[str, float]) -> str:
    return f"{d['p50']:.0f} / {d['p95']:.0f} / {d['p99']:.0f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Concurrent WebSocket clients",
        "",
        machine_line(result),
        "",
        f"One bridge, one worker (generate concurrency 32), {result['topic_partitions']} partitions, "
        f"bridge_max_connections {result['bridge_max_connections']}, retrieve_k {result['retrieve_k']} "
        f"(rerank_k {result['rerank_k']}). Every client connects (loopback), then all ask "
        f"one FAQ question at the same moment; llm_echo, {result['max_tokens']} tokens. Corpus: "
        f"{result['corpus']['dirs']}, {result['corpus']['files']} pages ({result['corpus']['chunks']} chunks). "
        "Times ms, p50 / p95 / p99.",
        "",
        "| clients | path | connected | completed | errors | unfinished | mixed-up | wall s | answers/s | TTFT "
        "| total |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["levels"]:
        lines.append(
            f"| {r['clients']} | {r['path']} | {r['connected']} | {r['completed']} | {r['errors']} | "
            f"{r['unfinished_at_timeout']} | "
            f"{r['mixed_up']} | {r['wall_s']} | {r['answers_per_s']} | {fmt(r['ttft_ms'])} | {fmt(r['total_ms'])} |"
        )
    names = sorted({k for r in result["levels"] for k in r["peak_rss_mib"]})
    lines += ["", "Peak RSS sampled during each level (MiB; a service's whole process group):", ""]
    lines.append("| clients | path | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for r in result["levels"]:
        lines.append(
            f"| {r['clients']} | {r['path']} | "
            + " | ".join(f"{r['peak_rss_mib'].get(k, 0):.0f}" for k in names)
            + " |"
        )
    lines += ["", "Peak RSS over the process lifetime (VmHWM summed over the group) at the end:", ""]
    for name, row in result["memory_end"].items():
        lines.append(f"- {name}: {row['peak_rss_mib']} MiB (pids {len(row['pids'])})")
    for r in result["levels"]:
        for label, key in (("connect failures", "connect_failure_examples"), ("errors", "error_examples"),
                           ("mixed-up", "mixed_examples")):  # fmt: skip
            if r[key]:
                lines.append(f"- {r['clients']} clients, {label}: {'; '.join(r[key])}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    if not have_matplotlib():
        return
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in result["levels"]:
        values = r["ttft_all_ms"]
        if values:
            left.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=f"{r['clients']} {r['path']}")
    left.set_xscale("log")
    left.set_xlabel("TTFT ms (send -> first token at the client)")
    left.set_ylabel("fraction of answers")
    left.set_title("TTFT distribution")
    left.legend()
    names = sorted({k for r in result["levels"] for k in r["peak_rss_mib"]})
    width = 0.8 / max(1, len(result["levels"]))
    for j, r in enumerate(result["levels"]):
        right.bar([i + j * width for i in range(len(names))], [r["peak_rss_mib"].get(k, 0) for k in names], width,
                  label=f"{r['clients']} {r['path']}")  # fmt: skip
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, fontsize=8)
    right.set_ylabel("peak RSS MiB")
    right.set_title("Memory per process (group)")
    right.legend(fontsize=8)
    fig.suptitle(f"ragstream concurrency, {result['machine']['nproc']} cores, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    dirs = [PYDOCS / name for name in args.corpus.split(",")]
    corpus = await ingest_corpus(settings, "default", dirs)  # the bridge's dev key maps to tenant "default"
    await wait_worker(settings)
    pool = faq_questions()
    keys = [pair.split(":")[0] for pair in settings.api_keys.split(",")]
    full = [(n, "full", keys[0]) for n in args.levels]
    # A second key whose tenant has no documents: no rerank, no model (bridge + bus + guard + embed + search). It
    # runs before the largest full level, whose unfinished requests would still be queued ahead of it.
    no_docs = [(n, "no-docs tenant", keys[1]) for n in args.no_docs_levels] if len(keys) > 1 else []
    plan = full[:-1] + no_docs + full[-1:]
    levels = []
    for n, path, key in plan:
        print(f"\n== {n} clients, {path} ...", flush=True)
        questions = [pool[(i * 11 + n) % len(pool)] for i in range(n)]
        r = await level(settings, n, questions, args.max_tokens, args.timeout, args.handshakes, key, path)
        print(f"   completed {r['completed']}/{n}  errors {r['errors']}  mixed-up {r['mixed_up']}  "
              f"unfinished {r['unfinished_at_timeout']}  TTFT {fmt(r['ttft_ms'])}  total {fmt(r['total_ms'])}  "
              f"wall {r['wall_s']}s", flush=True)  # fmt: skip
        print(f"   peak RSS MiB {r['peak_rss_mib']}", flush=True)
        levels.append(r)
        await asyncio.sleep(3.0)
    return {"corpus": corpus, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 1000])
    parser.add_argument("--no-docs-levels", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000],
                        help="levels also run for a tenant without documents (refusal after retrieval)")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per level for every answer to finish")
    parser.add_argument("--handshakes", type=int, default=100, help="WebSocket handshakes in flight at once")
    parser.add_argument("--corpus", default="faq", help="comma-separated folders of the Python 3.11 HTML docs")
    parser.add_argument("--retrieve-k", type=int, default=5,
                        help="candidates reranked per query in the private stack (default pipeline: 20)")  # fmt: skip
    parser.add_argument("--reuse-env", action="store_true", help="use the running stack + worker + bridge")
    args = parser.parse_args()
    limit = raise_nofile(max(args.levels + args.no_docs_levels) * 2 + 512)
    print(f"RLIMIT_NOFILE soft limit {limit}", flush=True)
    load_start = os.getloadavg()
    started = time.monotonic()
    max_conn = max(1000, max(args.levels + args.no_docs_levels) + 100)
    with bench_stack(
        args.reuse_env, ["worker", "bridge"], request_timeout_s=300.0, bridge_max_connections=max_conn,
        retrieve_k=args.retrieve_k, api_keys="dev-key:default,bench-nodocs:nodocs",
        bridge_instance=f"bench-{uuid.uuid4().hex[:6]}",
    ) as settings:  # fmt: skip
        measured = asyncio.run(measure(args, settings))
        memory_end = service_memory(settings)
    result: dict[str, Any] = header(load_start)
    result.update(measured)
    result.update(
        {
            "max_tokens": args.max_tokens,
            "topic_partitions": settings.topic_partitions,
            "bridge_max_connections": settings.bridge_max_connections,
            "retrieve_k": settings.retrieve_k,
            "rerank_k": settings.rerank_k,
            "memory_end": memory_end,
            "wall_s": round(time.monotonic() - started, 1),
            "args": vars(args),
        }
    )
    json_path, md_path = write_results("concurrency", result, markdown(result))
    plot(result, plot_path(json_path))
    print("\n" + markdown(result))
    print(f"results: {json_path}\n         {md_path}")


if __name__ == "__main__":
    main()
