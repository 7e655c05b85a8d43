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

``benchmarks/run_all.py`` calls :func:`measure` and :func:`build_summary` on its shared stack; the Markdown and the
figure come from the "concurrency" renderer in ``processors/evaluation/bench_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYDOCS,
    RESULTS,
    Measured,
    MemorySampler,
    bench_stack,
    dist,
    faq_questions,
    ingest_corpus,
    ints,
    publish,
    raise_nofile,
    service_memory,
    stamped_dir,
    wait_worker,
)
from websockets.asyncio.client import ClientConnection, connect

from infra.settings import Settings
from processors.reporting.bench_sections import goals_summary
from processors.reporting.machine import run_facts
from streams.bridge.auth import parse_api_keys

NO_DOCS_KEY = "bench-nodocs"
# Seconds between a request's deadline and the client's bound: for the timeout errors of the requests still queued
# at the deadline to be sent, fanned out by the bridge and read.
DELIVERY_MARGIN_S = 10.0


@dataclass
class ConcurrencyConfig:
    """What to measure; ``retrieve_k`` applies to the private stack (default pipeline: 20)."""

    levels: list[int] = field(default_factory=lambda: [1, 100, 1000])
    no_docs_levels: list[int] = field(default_factory=lambda: [1000])
    max_tokens: int = 16
    timeout_s: float = 150.0
    handshakes: int = 100
    retrieve_k: int | None = 5

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ConcurrencyConfig:
        """From this script's options or run_all's (the same names)."""
        return cls(
            levels=args.levels,
            no_docs_levels=args.no_docs_levels,
            max_tokens=args.max_tokens,
            timeout_s=args.timeout,
            handshakes=args.handshakes,
            retrieve_k=args.retrieve_k,
        )

    @property
    def most_clients(self) -> int:
        return max([1, *self.levels, *self.no_docs_levels])


def stack_overrides(config: ConcurrencyConfig) -> dict[str, object]:
    """Settings the private stack needs for this benchmark: room for every socket (the default 1000 would refuse a
    1000th client while earlier sockets are still closing), a second API key whose tenant has no documents, a long
    request timeout, and the benchmark's ``retrieve_k``. Every client uses one API key, so the per-key and
    per-tenant quotas are raised to the benchmark's size: it measures capacity, not the quotas (their test is
    tests/streams/bridge/test_bridge_quotas.py). Each request's deadline (``request_timeout_s``) falls
    ``DELIVERY_MARGIN_S`` inside the client's bound, so an answer that cannot be ready in time comes back as a
    ``timeout`` error while the client still listens, as a client with that bound would configure it."""
    room = max(1000, config.most_clients + 100)
    overrides: dict[str, object] = {
        "request_timeout_s": max(1.0, config.timeout_s - DELIVERY_MARGIN_S),
        "bridge_max_connections": room,
        "bridge_key_connections": room,
        "bridge_tenant_connections": room,
        "bridge_key_burst": room,
        "bridge_tenant_burst": room,
        "bridge_key_rate": float(room),
        "bridge_tenant_rate": float(room),
        "api_keys": f"dev-key:default,{NO_DOCS_KEY}:nodocs",
        "bridge_instance": f"bench-{uuid.uuid4().hex[:6]}",
    }
    if config.retrieve_k is not None:
        overrides["retrieve_k"] = config.retrieve_k
    return overrides


def prepare_process(config: ConcurrencyConfig) -> int:
    """Raise this process's descriptor limit before the stack starts (the bridge inherits it)."""
    limit = raise_nofile(config.most_clients * 2 + 512)
    print(f"RLIMIT_NOFILE soft limit {limit}", flush=True)
    return limit


@dataclass
class Client:
    index: int
    question: str
    ws: ClientConnection | None = None
    connected: bool = False
    connect_error: str = ""
    request_id: str = ""
    tokens: list[str] = field(default_factory=list)
    sent: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    done_text: str | None = None
    error_code: str | None = None  # the code of an ``error`` event; None for a broken socket or no event at all
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
            client.connected = True
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
                client.error_code = str(message.get("code"))
                client.error = f"{client.error_code}: {message.get('message', '')[:100]}"
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


def summarize_level(
    clients: list[Client], *, path: str, connect_s: float, wall_s: float, peak_rss_mib: dict[str, float]
) -> dict[str, Any]:
    """One level: what every client saw, counted (completed, errors, unfinished, mixed-up) and distributed."""
    connected = [c for c in clients if c.connected]
    done = [c for c in connected if c.done_text is not None and not c.error]
    unfinished = [c for c in connected if c.done_text is None and not c.error]
    mixed = [c for c in connected if c.mixed]
    errors = [c for c in connected if c.error]
    return {
        "clients": len(clients),
        "path": path,
        "connected": len(connected),
        "connect_failures": len(clients) - len(connected),
        "connect_failure_examples": sorted({c.connect_error for c in clients if c.connect_error})[:3],
        "connect_s": round(connect_s, 2),
        "completed": len(done),
        "errors": len(errors),
        "error_codes": dict(Counter(c.error_code or "no error event" for c in errors).most_common()),
        "error_examples": sorted({c.error for c in errors})[:3],
        "unfinished_at_timeout": len(unfinished),
        "mixed_up": len(mixed),
        "mixed_examples": [m for c in mixed[:3] for m in c.mixed[:2]],
        "finish_reasons": {r: sum(1 for c in done if c.finish == r) for r in sorted({c.finish for c in done})},
        "wall_s": round(wall_s, 2),
        "answers_per_s": round(len(done) / wall_s, 2) if wall_s > 0 else 0.0,
        "ttft_ms": dist([c.ttft_ms for c in done if c.ttft_ms is not None]),
        "total_ms": dist([c.total_ms for c in done if c.total_ms is not None]),
        "ttft_all_ms": sorted(round(c.ttft_ms, 1) for c in done if c.ttft_ms is not None),
        "peak_rss_mib": peak_rss_mib,
    }


async def level(
    settings: Settings, n: int, questions: list[str], config: ConcurrencyConfig, api_key: str, path: str
) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{settings.bridge_port}/"
    clients = [Client(i, questions[i % len(questions)]) for i in range(n)]
    sampler = MemorySampler(settings)
    sampler.start()
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(config.handshakes)
    await asyncio.gather(*(open_client(c, url, api_key, gate) for c in clients))
    connect_s = time.perf_counter() - t0
    connected = [c for c in clients if c.connected]
    print(f"   {len(connected)}/{n} connected in {connect_s:.1f}s", flush=True)
    start = asyncio.Event()
    tasks = [asyncio.create_task(converse(c, start, config.max_tokens)) for c in connected]
    began = time.perf_counter()
    start.set()
    _, pending = await asyncio.wait(tasks, timeout=config.timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - began
    await close_all(clients)
    peak = await sampler.stop()
    return summarize_level(clients, path=path, connect_s=connect_s, wall_s=wall, peak_rss_mib=peak)


def fmt(d: dict[str, float]) -> str:
    return f"{d['p50']:.0f} / {d['p95']:.0f} / {d['p99']:.0f}"


async def measure(settings: Settings, config: ConcurrencyConfig) -> list[dict[str, Any]]:
    """Every level, full path with the first API key (its tenant must have the corpus) and, for
    ``config.no_docs_levels``, with a key whose tenant has no documents. The worker and bridge must be up."""
    pool = faq_questions()
    keys = list(parse_api_keys(settings.api_keys))
    full = [(n, "full", keys[0]) for n in config.levels]
    # A second key whose tenant has no documents: no rerank, no model (bridge + bus + guard + embed + search). It
    # runs before the largest full level, whose unfinished requests would still be queued ahead of it.
    no_docs = [(n, "no-docs tenant", keys[1]) for n in config.no_docs_levels] if len(keys) > 1 else []
    plan = full[:-1] + no_docs + full[-1:]
    levels = []
    for n, path, key in plan:
        print(f"\n== {n} clients, {path} ...", flush=True)
        questions = [pool[(i * 11 + n) % len(pool)] for i in range(n)]
        r = await level(settings, n, questions, config, key, path)
        print(f"   completed {r['completed']}/{n}  errors {r['errors']}  mixed-up {r['mixed_up']}  "
              f"unfinished {r['unfinished_at_timeout']}  TTFT {fmt(r['ttft_ms'])}  total {fmt(r['total_ms'])}  "
              f"wall {r['wall_s']}s", flush=True)  # fmt: skip
        print(f"   peak RSS MiB {r['peak_rss_mib']}", flush=True)
        levels.append(r)
        await asyncio.sleep(3.0)
    return levels


def build_summary(levels: list[dict[str, Any]], measured: Measured) -> dict[str, Any]:
    """The "concurrency" summary the report renders: the levels plus what they were measured with."""
    return measured.summary(
        "concurrency",
        "Concurrent WebSocket clients",
        levels=levels,
        timeout_s=measured.config.timeout_s,
        request_timeout_s=measured.settings.request_timeout_s,
        bridge_max_connections=measured.settings.bridge_max_connections,
    )


async def ingest_and_measure(
    settings: Settings, config: ConcurrencyConfig, corpus_dirs: list[Path]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    corpus = await ingest_corpus(settings, "default", corpus_dirs)  # the bridge's dev key maps to tenant "default"
    await wait_worker(settings)
    return corpus, await measure(settings, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=ints, default=[1, 100, 1000])
    parser.add_argument("--no-docs-levels", type=ints, default=[1000],
                        help="levels also run for a tenant without documents (refusal after retrieval)")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per level for every answer to finish")
    parser.add_argument("--handshakes", type=int, default=100, help="WebSocket handshakes in flight at once")
    parser.add_argument("--corpus", default="faq", help="comma-separated folders of the Python 3.11 HTML docs")
    parser.add_argument("--retrieve-k", type=int, default=5,
                        help="candidates reranked per query in the private stack (default pipeline: 20)")  # fmt: skip
    parser.add_argument("--reuse-env", action="store_true", help="use the running stack + worker + bridge")
    args = parser.parse_args()
    config = ConcurrencyConfig.from_args(args)
    prepare_process(config)
    facts = run_facts()
    started = time.monotonic()
    dirs = [PYDOCS / name for name in args.corpus.split(",")]
    with bench_stack(args.reuse_env, ["worker", "bridge"], **stack_overrides(config)) as settings:
        corpus, levels = asyncio.run(ingest_and_measure(settings, config, dirs))
        measured = Measured(config, settings, corpus, service_memory(settings), time.monotonic() - started)
    summary = {**facts, **build_summary(levels, measured)}
    summary["goals"] = goals_summary(concurrency=summary)
    publish(stamped_dir(RESULTS, "concurrency"), "ragstream concurrency benchmark", summary)


if __name__ == "__main__":
    main()
