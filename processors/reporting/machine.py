"""What a measurement was taken on: the machine, its load, the date and the commit. Every report starts with it."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processors.reporting.markdown import fmt

# The source checkout this module runs from (benchmarks and reports run from a checkout; elsewhere the commit is
# reported as unknown).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: usable CPUs (``nproc``), memory, CPU model, OS, Python, and the load
    average now (1/5/15 min), because on a shared machine the load says how contended the figures are."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except (OSError, ValueError):
        pass
    return {
        "nproc": cpus,
        "memory_gib": memory_gib,
        "cpu_model": model or platform.processor() or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """:func:`machine_info` as one line of prose, for every report that names its machine."""
    return (
        f"{info.get('nproc')} CPUs (`nproc`), {fmt(info.get('memory_gib'), 1)} GiB memory, "
        f"{info.get('cpu_model')}; {info.get('os')}, Python {info.get('python')}"
    )


def load_average() -> list[float]:
    """1/5/15-minute load average: how busy a shared machine was while the figures were taken."""
    return [round(x, 2) for x in os.getloadavg()]


def run_facts(started_at: dt.datetime | None = None) -> dict[str, Any]:
    """Taken when a run starts: its date, the commit and the machine (with the load average at the start)."""
    when = started_at or dt.datetime.now(dt.UTC)
    return {"started_at": when.isoformat(timespec="seconds"), "git_commit": git_commit(), "machine": machine_info()}


def git_commit(root: Path = SOURCE_ROOT) -> str:
    """The checked-out commit, read from ``.git`` directly (no git binary needed on a benchmark box)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head[4:].strip()
        bases = [git]
        if (git / "commondir").exists():
            bases.append((git / (git / "commondir").read_text().strip()).resolve())
        for base in bases:
            if (base / ref).exists():
                return (base / ref).read_text().strip()
            if (base / "packed-refs").exists():
                for line in (base / "packed-refs").read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
        return f"unknown ({ref} has no commit yet)"
    except OSError:
        return "unknown (no .git)"
