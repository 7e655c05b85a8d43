"""Shared parts of the pipeline benchmarks and ``benchmarks/run_all.py``: a private stack, the corpus, questions,
statistics, process memory and the results folder (summary.json, summary.md and PNGs, written by
``processors.reporting.report.write_run``)."""

from __future__ import annotations

import asyncio
import html
import os
import re
import resource
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.settings import REPO_ROOT, Settings
from infra.stack import private_settings

PYDOCS = Path("/usr/share/doc/python3.11/html")
CORPUS_DIRS = (PYDOCS / "faq", PYDOCS / "tutorial")
RESULTS = REPO_ROOT / "benchmarks" / "results" / "pipeline"
# The models the query path needs with llm_echo, and embedder_bulk, which ingestion embeds with
# (settings.ingest_embedder_model); the LLMs are not loaded (memory, start time).
BENCH_MODELS = "embedder,embedder_bulk,reranker,llm_echo"
SERVICES = ("worker", "bridge", "kafka", "triton", "redis", "milvus")


# --- options -----------------------------------------------------------------------------------------------------
def floats(text: str) -> list[float]:
    """An argparse type: "1,10,50" -> [1.0, 10.0, 50.0] ("" -> [])."""
    return [float(x) for x in text.split(",") if x]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def raise_nofile(wanted: int) -> int:
    """1000 WebSocket clients need more descriptors than the usual 1024; the bridge spawned later inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


# --- stack -------------------------------------------------------------------------------------------------------
def bench_settings(data_dir: Path, **overrides: object) -> Settings:
    """A private stack with only the models the query path needs for llm_echo."""
    defaults: dict[str, object] = {
        "host": "127.0.0.1",
        "start_timeout_s": 300.0,
        "triton_load_models": BENCH_MODELS,
        "bridge_instance": "bench",
    }
    return private_settings(data_dir, **{**defaults, **overrides})


def export_settings(settings: Settings) -> None:
    """Services spawned by :class:`Stack` (worker, bridge) read RAGSTREAM_* from this process's environment."""
    for key in [k for k in os.environ if k.startswith("RAGSTREAM_")]:
        del os.environ[key]
    os.environ.update(settings.to_env())


@contextmanager
def bench_stack(reuse_env: bool, services: Sequence[str], **overrides: object) -> Iterator[Settings]:
    """A private stack on free ports in a temp dir (stopped at the end), or the one named by RAGSTREAM_*."""
    if reuse_env:
        yield Settings.from_env()
        return
    from infra.stack import Stack

    scratch = Path(tempfile.mkdtemp(prefix="ragstream-bench-pipeline-"))
    settings = bench_settings(scratch / "stack", **overrides)
    export_settings(settings)
    stack = Stack(settings)
    try:
        t0 = time.monotonic()
        print(f"starting a private stack in {settings.data_path} ...", flush=True)
        stack.up()
        stack.up(list(services))
        print(f"stack up in {time.monotonic() - t0:.0f}s", flush=True)
        yield settings
    finally:
        print("stopping the private stack ...", flush=True)
        for name, stopped in stack.down():
            print(f"  {name}: {'stopped' if stopped else 'not running'}", flush=True)


# --- corpus and questions ----------------------------------------------------------------------------------------
async def ingest_corpus(settings: Settings, tenant: str, corpus: Sequence[Path] = CORPUS_DIRS) -> dict[str, Any]:
    """Ingest through Kafka and wait for the index acks. A folder's pages get its name as doc id prefix
    ("faq/design.html", as in the golden set), so two folders' index.html do not replace each other."""
    from streams.clients.ingest import format_report, ingest

    paths = [d for d in corpus if d.exists()]
    if not paths:
        raise SystemExit(f"{PYDOCS} is missing: apt-get install -y python3.11-doc")
    files = chunks = 0
    seconds = 0.0
    for path in paths:
        prefix = f"{path.name}/" if path.is_dir() else ""
        report = await ingest(settings, [path], tenant, prefix=prefix, timeout_s=600.0, progress=False)
        print(f"{path}: {format_report(report)}", flush=True)
        if not report.ok:
            raise RuntimeError(f"ingestion of {path} failed")
        files, chunks, seconds = files + report.files, chunks + report.chunks, seconds + report.seconds
    names = ", ".join(str(p) for p in paths)
    return {"dirs": names, "files": files, "chunks": chunks, "seconds": round(seconds, 1)}


_HEADING = re.compile(r"<h[23][^>]*>(.*?)</h[23]>", re.S)
_TAG = re.compile(r"<[^>]+>")


def faq_questions() -> list[str]:
    """Every FAQ heading that is a question ("How do I ...?"), in page order."""
    questions: list[str] = []
    for page in sorted((PYDOCS / "faq").glob("*.html")):
        for raw in _HEADING.findall(page.read_text(errors="replace")):
            text = html.unescape(_TAG.sub("", raw)).replace("¶", "").strip()
            text = re.sub(r"\s+", " ", text)
            if text.endswith("?") and len(text) > 10:
                questions.append(text)
    if not questions:
        raise SystemExit("no FAQ questions found")
    return questions


async def wait_worker(settings: Settings, timeout_s: float = 300.0) -> None:
    """Ready when an llm_echo question makes the round trip through Kafka, the worker and Triton."""
    from streams.clients.asker import wait_for_worker

    try:
        await wait_for_worker(settings, timeout_s=timeout_s, attempt_s=10.0)
    except TimeoutError:
        raise RuntimeError("the worker did not answer in time") from None


# --- statistics --------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def dist(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
    }


# --- process memory ----------------------------------------------------------------------------------------------
@dataclass
class ProcMem:
    pids: list[int]
    rss_mib: float
    hwm_mib: float


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), after pid and (comm)
            members.append(int(entry.name))
    return sorted(members)


def service_memory(settings: Settings) -> dict[str, dict[str, Any]]:
    """RSS and peak RSS (VmHWM) per service: the PID from <data_dir>/run/<name>.pid plus its process group (the
    Triton Python stubs, Kafka's JVM). Peak of a group is the sum of its members' peaks (an upper bound)."""
    out: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        pid_file = settings.data_path / "run" / f"{name}.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        members = _group_members(pid) or [pid]
        rss = sum(_status_kib(p, "VmRSS") for p in members) / 1024
        hwm = sum(_status_kib(p, "VmHWM") for p in members) / 1024
        out[name] = {"pids": members, "rss_mib": round(rss, 1), "peak_rss_mib": round(hwm, 1)}
    me = os.getpid()
    out["bench client"] = {
        "pids": [me],
        "rss_mib": round(_status_kib(me, "VmRSS") / 1024, 1),
        "peak_rss_mib": round(_status_kib(me, "VmHWM") / 1024, 1),
    }
    return out


class MemorySampler:
    """Samples :func:`service_memory` every ``interval_s``; keeps the highest RSS seen per service."""

    def __init__(self, settings: Settings, interval_s: float = 1.0) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.peak_rss: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, row in service_memory(self.settings).items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), float(row["rss_mib"]))

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()
        return dict(self.peak_rss)


# --- results -----------------------------------------------------------------------------------------------------
@dataclass
class Measured:
    """What a part was measured with, for its summary: its config (with ``max_tokens``), the stack, the corpus,
    the services' memory at the end and the part's wall time."""

    config: Any
    settings: Settings
    corpus: dict[str, Any]
    memory: dict[str, Any]
    wall_s: float

    def summary(self, kind: str, title: str, **figures: Any) -> dict[str, Any]:
        """A summary of ``kind`` for the report: what every pipeline benchmark states, then its own figures."""
        return {
            "kind": kind,
            "title": title,
            "corpus": self.corpus,
            "max_tokens": self.config.max_tokens,
            "topic_partitions": self.settings.topic_partitions,
            "retrieve_k": self.settings.retrieve_k,
            "rerank_k": self.settings.rerank_k,
            **figures,
            "memory": self.memory,
            "wall_s": round(self.wall_s, 1),
            "config": vars(self.config),
        }


def stamped_dir(root: Path, name: str = "") -> Path:
    """A new results folder named by the UTC time (``name-`` first when given)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / (f"{name}-{stamp}" if name else stamp)
    path.mkdir(parents=True, exist_ok=False)
    return path


def publish(out_dir: Path, title: str, summary: dict[str, Any]) -> Path:
    """summary.json, summary.md and the figures in ``out_dir`` (see ``report.write_run``); prints the Markdown."""
    from processors.reporting.machine import load_average
    from processors.reporting.report import write_run

    summary.setdefault("load_average_end", load_average())
    md_path = write_run(out_dir, title, summary)
    print("\n" + md_path.read_text(), flush=True)
    print(f"results: {out_dir}", flush=True)
    return md_path
