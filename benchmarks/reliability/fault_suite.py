"""The fault suite: kill -9 of each service under a steady stream of WebSocket questions and an ingest, one report.

    python benchmarks/reliability/fault_suite.py                         # every fault, single broker (~12 min)
    python benchmarks/reliability/fault_suite.py --brokers 3             # on the project's 3-node KRaft cluster
    python benchmarks/reliability/fault_suite.py --faults worker,redis   # some faults only
    python benchmarks/reliability/fault_suite.py --brokers 3 --workers 2 --bridges 2   # the scale-out cluster

Starts a private stack (own data dir, free ports: Kafka, Redis, Milvus, Triton with embedder, reranker, llm_echo;
``ragstream up worker bridge``, ``--workers`` / ``--bridges`` of each, and the supervisor), ingests
``--ingest-dir`` once into the questions' tenant (the baseline: how many chunks each document has), then for each
fault in turn:

1. clients ask ``--rate`` questions per second over the bridges (question n to bridge n mod the count), each on its
   own socket (llm_echo, short answers, cache off); a client whose socket drops reconnects to the same bridge and
   sends ``resume`` with its last ``seq`` (or asks again if the drop came before ``accepted``), until its
   ``--deadline``;
2. ``--ingest-lead`` s before the kill an ingest starts and runs through the window: rounds of ``--ingest-dir``,
   each into a tenant of its own;
3. after ``--before`` s the service's process group is killed with SIGKILL by the PID its start recorded (for
   Kafka: node 1, the single broker or one broker of ``--brokers 3``; the first worker or bridge), and the
   project's supervisor (``ragstream up supervisor``) finds it dead and restarts it; with ``--restart-by suite``
   the suite restarts it itself ``--restart-delay`` s later (``Stack.up([name])``);
4. questions go on until ``--window`` s after the kill; then every client waits out its deadline, the ingest ends
   (a round that did not end clean is run once more after the recovery, as its user would), and every acknowledged
   document's chunks are counted in Milvus against the baseline.

Per fault: done / clean errors by code / no connection / lost, acknowledged documents lost, restart time and the
time until the stack answers again (see ``fault_outcomes.py``). Nothing is restarted but the killed service.
Report: ``benchmarks/reliability/REPORT.md`` (``--report``) and the JSON under
``benchmarks/results/reliability/<UTC stamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pipeline"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYDOCS, _group_members, bench_settings, export_settings, faq_questions, stamped_dir
from fault_outcomes import IngestCheck, Question, merge_ingests, render_report, summarize_fault
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from infra.services._process import Service, _proc_start_time
from infra.services.supervisor import INTERVAL_S as SUPERVISOR_CHECK_S
from infra.settings import REPO_ROOT, Settings
from infra.stack import Stack, free_port_block
from processors.reporting.machine import load_average, run_facts

HERE = Path(__file__).resolve().parent
FAULTS = ("kafka", "worker", "bridge", "triton", "redis", "milvus")
CONTROL = "none"  # the same load and ingest, nothing killed: what the load alone costs (--faults none,...)
RESULTS = REPO_ROOT / "benchmarks" / "results" / "reliability"
REPORT = HERE / "REPORT.md"
API_KEY = "fault-key"
TENANT = "faults"  # the key's tenant: the questions retrieve from the baseline ingest
MODELS = "embedder,embedder_bulk,reranker,llm_echo"  # embedder_bulk: the ingest path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, from {','.join(FAULTS)} and {CONTROL} (a control run: nothing killed)",
    )
    parser.add_argument("--brokers", type=int, default=1, choices=(1, 3), help="Kafka nodes (3: the local cluster)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one consumer group)")
    parser.add_argument("--bridges", type=int, default=1, help="bridge processes (each its own reply topic)")
    parser.add_argument(
        "--restart-by",
        choices=("supervisor", "suite"),
        default="supervisor",
        help="who restarts a killed service: the project's supervisor, or the suite after --restart-delay",
    )
    parser.add_argument("--rate", type=float, default=2.0, help="questions per second")
    parser.add_argument("--before", type=float, default=8.0, help="seconds of load before each kill")
    parser.add_argument("--window", type=float, default=40.0, help="seconds of load after each kill")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds a client waits for done or error")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="the bridge's request_timeout_s")
    parser.add_argument("--restart-delay", type=float, default=1.0, help="seconds from the kill to the restart")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ingest-dir", type=Path, default=PYDOCS / "tutorial")
    parser.add_argument("--ingest-lead", type=float, default=3.0, help="the ingest starts this long before a kill")
    parser.add_argument("--ingest-gap", type=float, default=5.0, help="seconds between ingest rounds")
    parser.add_argument("--no-ingest", action="store_true", help="questions only")
    parser.add_argument("--report", type=Path, default=REPORT, help="where the Markdown report goes")
    args = parser.parse_args(argv)
    args.fault_list = [f for f in args.faults.split(",") if f]
    unknown = set(args.fault_list) - {*FAULTS, CONTROL}
    if unknown:
        parser.error(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return args


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average " + " ".join(str(x) for x in load_average())


def suite_settings(data_dir: Path, args: argparse.Namespace, instance: str) -> Settings:
    room = 1000
    overrides: dict[str, object] = {
        "triton_load_models": MODELS,
        "bridge_instance": instance,  # a fixed name: the restarted bridge reads the same reply topic (resume)
        "request_timeout_s": args.request_timeout,
        "api_keys": f"{API_KEY}:{TENANT}",
        "retrieve_k": 5,
        "kafka_brokers": args.brokers,
        "local_workers": args.workers,
        "local_bridges": args.bridges,
        # One key asks every question: the quotas are raised so that they measure faults, not quotas.
        "bridge_max_connections": room,
        "bridge_key_connections": room,
        "bridge_tenant_connections": room,
        "bridge_key_burst": room,
        "bridge_tenant_burst": room,
        "bridge_key_rate": float(room),
        "bridge_tenant_rate": float(room),
    }
    if args.brokers > 1:
        base = free_port_block(2 * args.brokers)
        overrides |= {"kafka_port": base, "kafka_controller_port": base + 1}
    settings: Settings = bench_settings(data_dir, **overrides)
    return settings


# --- one client's question ---------------------------------------------------------------------------------------
async def ask(url: str, q: Question, options: dict[str, Any]) -> None:
    """Ask, read to done/error; on a dropped socket reconnect and resume (or ask again before ``accepted``)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    first = True
    loop = asyncio.get_running_loop()
    while q.remaining(loop.time()) > 0 and not q.end:
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=min(10.0, q.remaining(loop.time())),
                               proxy=None, max_queue=None)  # fmt: skip
        except (OSError, WebSocketException, TimeoutError) as exc:
            q.connect_failures += 1
            if len(q.problems) < 20:
                q.problems.append(f"connect: {type(exc).__name__}: {str(exc)[:80]}")
            await asyncio.sleep(min(0.5, max(0.0, q.remaining(loop.time()))))
            continue
        if not first:
            q.reconnects += 1
        try:
            if q.request_id:
                q.resumes += 1
                frame = {"type": "resume", "id": q.request_id, "after_seq": q.last_seq}
            else:
                if q.asked:
                    q.reasks += 1
                frame = {"type": "ask", "id": f"q{q.index}", "question": q.text, "options": options}
            await ws.send(json.dumps(frame))
            q.asked = True
            first = False
            while not q.end:
                remaining = q.remaining(loop.time())
                if remaining <= 0:
                    break
                raw = await asyncio.wait_for(ws.recv(), remaining)
                handle(q, json.loads(raw), loop.time())
        except TimeoutError:
            break  # the deadline passed on an open socket
        except (OSError, WebSocketException) as exc:
            if len(q.problems) < 20:
                q.problems.append(f"socket: {type(exc).__name__}: {str(exc)[:80]}")
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)


def handle(q: Question, message: dict[str, Any], now: float) -> None:
    kind = message.get("type")
    if kind == "accepted":
        q.request_id = str(message.get("request_id", ""))
        q.accepted_at = q.accepted_at or now
    elif kind == "token":
        seq = int(message.get("seq", -1))
        if seq <= q.last_seq:
            return  # replayed after a resume: already have it
        if seq > q.last_seq + 1:
            q.seq_gaps += 1
        q.last_seq = seq
        q.tokens.append(str(message.get("text", "")))
    elif kind == "done":
        q.done_text = str(message.get("text", ""))
        q.finish("done", str(message.get("finish_reason", "")), now)
    elif kind == "error":
        q.finish("error", str(message.get("code", "")), now)
        q.error_stage = str(message.get("stage") or "")
        q.problems.append(f"error {message.get('code')}: {str(message.get('message', ''))[:100]}")


class Load:
    """``rate`` questions per second, each its own client task, question n to bridge n mod the count; all on the
    loop's clock."""

    def __init__(self, bridges: dict[str, str], rate: float, deadline_s: float, options: dict[str, Any]) -> None:
        self.bridges = list(bridges.items())  # (service name, URL)
        self.rate, self.deadline_s, self.options = rate, deadline_s, options
        self.pool = faq_questions()
        self.questions: list[Question] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self._stop.is_set():
            via, url = self.bridges[n % len(self.bridges)]
            q = Question(n, self.pool[n % len(self.pool)], loop.time(), self.deadline_s, via=via)
            self.questions.append(q)
            self.tasks.append(asyncio.create_task(ask(url, q, self.options)))
            n += 1
            wait = start + n / self.rate - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())

    async def stop_and_drain(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await self._runner
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), self.deadline_s + 30)


# --- the ingest and its check ------------------------------------------------------------------------------------
async def chunk_counts(settings: Settings, tenant: str, doc_ids: list[str]) -> dict[str, int]:
    """Chunks per document in Milvus (every version), through the project's index (reloads after a restart)."""
    import redis.asyncio as aioredis

    from processors.adapters.doc_states import DocStates
    from processors.adapters.milvus import MilvusIndex, collection_name, milvus_client

    redis = aioredis.Redis.from_url(settings.redis_address)
    client = milvus_client(settings.milvus_address)
    try:
        index = MilvusIndex(client, settings.milvus_address, DocStates(redis, prefix=settings.topic_prefix),
                            collection=collection_name(settings.topic_prefix))  # fmt: skip
        return {doc_id: await index.count(tenant, doc_id) for doc_id in doc_ids}
    finally:
        await client.close()
        await redis.aclose()


async def run_ingest(settings: Settings, folder: Path, tenant: str, check: IngestCheck) -> set[str]:
    """One ingest run; returns the doc ids acknowledged (sent or skipped as unchanged, and not in its errors)."""
    from streams.clients.ingest import discover, ingest

    sources, _ = discover([folder])
    check.files = len(sources)
    check.runs += 1
    try:
        report = await ingest(settings, [folder], tenant, timeout_s=300.0, idle_timeout_s=120.0, progress=False)
    except Exception as exc:  # the client itself failed: what it had acknowledged is unknown to it
        check.client_errors.append(f"run {check.runs}: {type(exc).__name__}: {str(exc)[:200]}")
        return set()
    failed = {doc_id for doc_id, _ in report.errors}
    for doc_id, reason in report.errors[:5]:
        check.client_errors.append(f"run {check.runs}: {doc_id}: {reason[:160]}")
    check.failed, check.timed_out = report.failed, report.timed_out
    check.seconds += report.seconds
    return {s.doc_id for s in sources} - failed


async def ingest_and_check(
    settings: Settings,
    folder: Path,
    tenant: str,
    baseline: dict[str, int],
    kill_at: asyncio.Future[float],
    recovered: asyncio.Event,
) -> IngestCheck:
    """One round: ingest ``folder`` into ``tenant``; if that did not end clean, once more after the recovery (as its
    user would); then count every acknowledged document's chunks against the baseline."""
    check = IngestCheck(tenant)
    before = not kill_at.done()
    acked = await run_ingest(settings, folder, tenant, check)
    check.hit_by_kill = int(before and kill_at.done())
    if len(acked) < check.files:
        await recovered.wait()
        acked |= await run_ingest(settings, folder, tenant, check)
    present = await chunk_counts(settings, tenant, sorted(acked))
    check.acked = len(acked)
    check.chunks_expected = sum(baseline.get(d, 0) for d in acked)
    check.chunks_present = sum(present.values())
    check.missing_docs = sorted(d for d in acked if present.get(d, 0) < baseline.get(d, 0) or present.get(d, 0) == 0)
    check.extra_docs = sorted(d for d in acked if present.get(d, 0) > baseline.get(d, 0))
    return check


async def ingest_rounds(
    settings: Settings,
    args: argparse.Namespace,
    fault: str,
    baseline: dict[str, int],
    kill_at: asyncio.Future[float],
    recovered: asyncio.Event,
    stop: asyncio.Event,
) -> list[IngestCheck]:
    """An ingest running through the whole fault window: rounds of the folder, each into a tenant of its own."""
    checks = []
    while not stop.is_set():
        tenant = f"ingest-{fault}-{uuid.uuid4().hex[:6]}"
        checks.append(await ingest_and_check(settings, args.ingest_dir, tenant, baseline, kill_at, recovered))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.ingest_gap)
    return checks


# --- kill and restart --------------------------------------------------------------------------------------------
def kill_group(service: Service) -> list[int]:
    """SIGKILL the service's process group by the PID its start recorded; returns the members killed."""
    pid = int(service.pid_file.read_text().split()[0])
    members = _group_members(pid) or [pid]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _proc_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def wait_restarted(service: Service, killed: set[int], timeout_s: float) -> None:
    """Until ``service`` runs again under a new PID (the supervisor restarted it) and its readiness probe passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid = service.running_pid()
        if pid is not None and pid not in killed and service.probe() is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service.name} was not restarted within {timeout_s:.0f} s")
        time.sleep(0.2)


async def wait_serving(settings: Settings, timeout_s: float = 240.0) -> float:
    """Seconds until an llm_echo request makes the round trip through Kafka, the worker and Triton."""
    from streams.clients.asker import wait_for_worker

    t0 = time.monotonic()
    await wait_for_worker(settings, timeout_s=timeout_s, attempt_s=5.0)
    return time.monotonic() - t0


async def ensure_serving(stack: Stack, settings: Settings, notes: list[str]) -> list[str]:
    """After a fault: does the pipeline answer, and is every service up? If not, restart what is down (the worker
    too when nothing answers) and say so: the fault then needed more than its own restart."""
    statuses = await asyncio.to_thread(stack.status, [*FAULTS])
    down = [s.name for s in statuses if s.state != "up"]
    if down:
        detail = ", ".join(f"{s.name} ({s.state}: {s.detail[:80]})" for s in statuses if s.state != "up")
        notes.append(f"after the run, not up: {detail}")
    try:
        serving_s = await wait_serving(settings, timeout_s=90.0)
        notes.append(f"after the run a direct Kafka round trip (llm_echo) answered in {serving_s:.1f} s")
        return []
    except TimeoutError:
        notes.append("after the run the pipeline did NOT answer a direct Kafka round trip within 90 s")
    restart = down or ["worker"]
    if "worker" in restart:
        await asyncio.to_thread(stack.down, ["worker"])
    await asyncio.to_thread(stack.up, restart)
    serving_s = await wait_serving(settings)
    notes.append(f"restarted {', '.join(restart)} by hand; then answered after {serving_s:.1f} s")
    return restart


async def run_fault(
    stack: Stack, settings: Settings, fault: str, args: argparse.Namespace, baseline: dict[str, int]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bridges = {service.name: service.address + "/" for service in stack.select(["bridge"])}
    options = {"model": "llm_echo", "max_tokens": args.max_tokens, "use_cache": False}
    load = Load(bridges, args.rate, args.deadline, options)
    kill_future: asyncio.Future[float] = loop.create_future()
    recovered = asyncio.Event()  # the killed service is back and the pipeline answers again
    stop_ingest = asyncio.Event()
    ingest_task: asyncio.Task[list[IngestCheck]] | None = None
    notes: list[str] = []
    load.start()
    lead = max(0.0, args.before - args.ingest_lead)
    await asyncio.sleep(lead)
    if not args.no_ingest:
        ingest_task = asyncio.create_task(
            ingest_rounds(settings, args, fault, baseline, kill_future, recovered, stop_ingest)
        )
    await asyncio.sleep(args.before - lead)
    kill_at = loop.time()
    killed = await asyncio.to_thread(kill_group, stack.services[fault]) if fault != CONTROL else []
    kill_future.set_result(kill_at)
    print(f"  {fault}: killed process group {killed}", flush=True)
    restart_s: float | None = None
    restart_error = ""
    try:
        if fault != CONTROL and args.restart_by == "suite":
            await asyncio.sleep(args.restart_delay)
            await asyncio.to_thread(stack.up, [fault])
        elif fault != CONTROL:
            await asyncio.to_thread(wait_restarted, stack.services[fault], set(killed), args.window + 120.0)
        restart_s = loop.time() - kill_at if fault != CONTROL else 0.0
        print(f"  {fault}: restarted, ready {restart_s:.1f}s after the kill", flush=True)
    except Exception as exc:
        restart_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        print(f"  {fault}: restart FAILED: {restart_error}", flush=True)
    with contextlib.suppress(TimeoutError):
        await wait_serving(settings, timeout_s=max(5.0, kill_at + args.window - loop.time()))
    recovered.set()
    remaining = kill_at + args.window - loop.time()
    if remaining > 0:
        await asyncio.sleep(remaining)
    stop_ingest.set()
    await load.stop_and_drain()
    check = merge_ingests(await ingest_task) if ingest_task is not None else None
    manual = await ensure_serving(stack, settings, notes)
    summary = summarize_fault(fault, load.questions, kill_at=kill_at, restart_s=restart_s, killed_pids=killed,
                              ingest=check, restart_error=restart_error, manual_restarts=manual,
                              notes=notes)  # fmt: skip
    print(f"  {fault}: done {summary['done']}, errors {summary['error']} {summary['error_codes']}, no connection "
          f"{summary['no_connection']}, lost {summary['lost']}, acked docs lost "
          f"{(summary['ingest'] or {}).get('acked_lost', '-')}, answers again after "
          f"{summary['first_answer_after_kill_s']}s", flush=True)  # fmt: skip
    return summary


async def suite(stack: Stack, settings: Settings, args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    from streams.clients.ingest import discover, ingest

    await wait_serving(settings)
    baseline: dict[str, int] = {}
    base_info: dict[str, Any] = {}
    if not args.no_ingest:
        report = await ingest(settings, [args.ingest_dir], TENANT, timeout_s=600.0, progress=False)
        if not report.ok:
            raise RuntimeError(f"the baseline ingest failed: {report.errors[:5]}")
        sources, _ = discover([args.ingest_dir])
        baseline = await chunk_counts(settings, TENANT, [s.doc_id for s in sources])
        base_info = {"files": report.files, "chunks": report.chunks, "seconds": round(report.seconds, 1)}
        print(f"baseline ingest: {base_info}", flush=True)
    results = []
    for fault in args.fault_list:
        print(f"\n== fault: kill -9 {fault}", flush=True)
        try:
            results.append(await run_fault(stack, settings, fault, args, baseline))
        except Exception as exc:  # reported, and the next fault still runs on what is left
            print(f"  {fault}: the fault run failed: {type(exc).__name__}: {exc}", flush=True)
            raise
        # Before the next fault: the whole stack serves again (a fault that never recovers stops the suite here).
        await wait_serving(settings)
        await asyncio.sleep(3.0)
    return results, base_info


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    facts = run_facts()
    facts["uptime_start"] = uptime()
    facts["load_average_start"] = load_average()
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="ragstream-faults-"))
    instance = f"faults-{uuid.uuid4().hex[:6]}"
    settings = suite_settings(scratch / "stack", args, instance)
    export_settings(settings)
    stack = Stack(settings)
    faults: list[dict[str, Any]] = []
    notes: list[str] = []
    base_info: Any = {}
    try:
        print(f"starting a private stack in {settings.data_path} ({args.brokers} Kafka node(s)) ...", flush=True)
        stack.up()
        stack.up(["worker", "bridge"])
        if args.restart_by == "supervisor":
            stack.up(["supervisor"])  # it watches what runs now, and restarts whatever dies from here on
        print(f"stack up in {time.monotonic() - started:.0f}s", flush=True)
        faults, base_info = asyncio.run(suite(stack, settings, args))
    except Exception as exc:
        notes.append(f"the suite stopped early: {type(exc).__name__}: {str(exc)[:400]}")
        print(f"suite stopped: {exc}", flush=True)
    finally:
        print("stopping the private stack ...", flush=True)
        for name, stopped in stack.down():
            print(f"  {name}: {'stopped' if stopped else 'not running'}", flush=True)
    summary: dict[str, Any] = {
        **facts,
        "command": "python benchmarks/reliability/fault_suite.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": {
            "brokers": args.brokers,
            "workers": args.workers,
            "bridges": args.bridges,
            "restart_by": args.restart_by,
            "supervisor_check_s": SUPERVISOR_CHECK_S,
            "rate": args.rate,
            "before_s": args.before,
            "window_s": args.window,
            "deadline_s": args.deadline,
            "request_timeout_s": args.request_timeout,
            "restart_delay_s": args.restart_delay,
            "max_tokens": args.max_tokens,
            "model": "llm_echo",
            "models": MODELS,
            "ingest_dir": str(args.ingest_dir),
            "ingest_lead_s": args.ingest_lead,
            "ingest_gap_s": args.ingest_gap,
            "bridge_instance": instance,
            "faults": args.fault_list,
            "baseline_ingest": base_info,
        },
        "faults": faults,
        "notes": notes,
        "uptime_end": uptime(),
        "load_average_end": load_average(),
        "wall_s": round(time.monotonic() - started),
    }
    markdown = render_report(summary)
    out = stamped_dir(RESULTS, "faults")
    (out / "faults.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "REPORT.md").write_text(markdown)
    args.report.write_text(markdown)
    print("\n" + markdown, flush=True)
    print(f"results: {out}; report: {args.report}", flush=True)
    if notes or any(f["lost"] for f in faults):
        sys.exit(1)


if __name__ == "__main__":
    main()
