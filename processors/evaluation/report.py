"""Reports people can read: machine facts, Markdown, and matplotlib figures, from summary JSON.

Every benchmark or evaluation writes a summary JSON with a ``kind`` ("eval", "retrieval", "replay", "latency",
"concurrency", "goals", "benchmarks"). :func:`render_section` turns one summary into a Markdown section (and its PNG
figures) with the renderer registered for its kind; a kind with no renderer still appears, as a table of every number
in it, so a new benchmark's JSON is in the report before anyone writes a renderer for it. :func:`write_report` puts
the machine, date, commit and load average on top of the sections; :func:`write_run` writes a run's
``summary.json`` and ``summary.md`` together, which is what ``ragstream eval``, the pipeline benchmarks and
``benchmarks/run_all.py`` do, and ``ragstream eval report`` re-renders any of them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import REPO_ROOT


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name in the report folder, caption)


Renderer = Callable[[Mapping[str, Any], Path], Section]
_RENDERERS: dict[str, Renderer] = {}


def register_renderer(kind: str, renderer: Renderer) -> None:
    """Render summaries of ``kind`` with ``renderer`` (a later registration replaces an earlier one)."""
    _RENDERERS[kind] = renderer


def renderer_for(kind: str) -> Renderer:
    _register_builtin()
    return _RENDERERS.get(kind, generic_section)


def render_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    section = renderer_for(str(summary.get("kind", "")))(summary, out_dir)
    provenance = [f"{key} {summary[key]}" for key in ("run_id", "started_at", "git_commit") if summary.get(key)]
    if provenance:  # a combined report mixes runs: each section says which one it shows
        section.lines = [f"*Run: {', '.join(provenance).replace('git_commit', 'commit')}*", "", *section.lines]
    return section


# --- machine facts ---------------------------------------------------------------------------------------------


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


def git_commit(root: Path = REPO_ROOT) -> str:
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


def nested_summaries(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A summary and the summaries nested in it (values that are mappings with a ``kind``), in order."""
    found: list[Mapping[str, Any]] = [summary]
    for value in summary.values():
        if isinstance(value, Mapping) and "kind" in value:
            found.extend(nested_summaries(value))
    return found


# --- Markdown --------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows)
    return lines


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every scalar leaf as (dotted.path, value); lists of scalars are summarised by their length."""
    out: list[tuple[str, Any]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list):
        if all(isinstance(v, Mapping) for v in data):
            for i, value in enumerate(data):
                out.extend(flatten(value, f"{prefix}[{i}]"))
        else:
            out.append((f"{prefix} (items)", len(data)))
    elif isinstance(data, int | float | str | bool) or data is None:
        out.append((prefix, data))
    return out


def generic_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    """Any summary JSON, as a table of its values: new benchmarks show up before they have a renderer."""
    skip = {"kind", "machine", "git_commit", "started_at", "finished_at"}
    own = {k: v for k, v in summary.items() if k not in skip and not (isinstance(v, Mapping) and "kind" in v)}
    rows = flatten(own)
    title = str(summary.get("title") or summary.get("kind") or "results")
    return Section(title, table(["figure", "value"], rows))


def write_report(
    out_dir: Path,
    title: str,
    summaries: Sequence[Mapping[str, Any]],
    *,
    machine: Mapping[str, Any] | None = None,
    commit: str | None = None,
    when: dt.datetime | None = None,
    load_average_end: Sequence[float] | None = None,
) -> Path:
    """Write ``summary.md`` in ``out_dir``: machine, date, commit and load average, then one section per summary.

    ``machine`` is :func:`machine_info` taken when the run started (its load average is the one at the start);
    without it the machine facts are taken now."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(machine or machine_info())
    stamp = (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [
        f"# {title}",
        "",
        f"- Date: {stamp}",
        f"- Commit: `{commit or git_commit()}`",
        f"- Machine: {describe_machine(info)}",
    ]
    start = info.get("load_average")
    if start is not None or load_average_end is not None:
        when_start = "at the start" if machine is not None else "now"
        parts = [f"{_triple(start)} {when_start}"] if start is not None else []
        parts += [f"{_triple(load_average_end)} at the end"] if load_average_end is not None else []
        lines.append(f"- Load average (1/5/15 min): {'; '.join(parts)}")
    lines.append("")
    kinds = [str(summary.get("kind", "")) for summary in summaries]
    for i, summary in enumerate(summaries):
        # two summaries of one kind (two eval runs compared) would overwrite each other's figures
        sub = f"{i:02d}-{kinds[i] or 'results'}" if kinds.count(kinds[i]) > 1 else ""
        figure_dir = out_dir / sub if sub else out_dir
        figure_dir.mkdir(exist_ok=True)
        section = render_section(summary, figure_dir)
        lines.extend([f"## {section.title}", "", *section.lines, ""])
        for name, caption in section.figures:
            lines.extend([f"![{caption}]({sub + '/' if sub else ''}{name})", "", f"*{caption}*", ""])
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def _triple(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def write_json(path: Path, data: Any) -> None:
    """JSON people can diff: indented, NaN and infinities written as null (a percentile of nothing, the top score
    of an empty ranking), any other non-JSON value as text."""
    path.write_text(json.dumps(_nan_to_none(data), indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")


def _nan_to_none(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {key: _nan_to_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_nan_to_none(value) for value in data]
    return data


def write_run(out_dir: Path, title: str, summary: Mapping[str, Any]) -> Path:
    """``summary.json`` and ``summary.md`` (one section per summary nested in it) for a run whose summary carries
    :func:`run_facts` and, when it finished, ``load_average_end``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    started = summary.get("started_at")
    return write_report(
        out_dir,
        title,
        nested_summaries(summary),
        machine=summary.get("machine"),
        commit=summary.get("git_commit"),
        when=dt.datetime.fromisoformat(started) if isinstance(started, str) else None,
        load_average_end=summary.get("load_average_end"),
    )


# --- figures ---------------------------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures are files, benchmark machines have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG, and free the figure (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def bar_chart(
    path: Path, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str, ylabel: str
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (None plots as 0, labelled n/a)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.45 * len(groups) * max(1, len(series)) + 2)), 4.2))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width - 0.4 + width / 2 for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                fmt(value, 2),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    top = max((v for values in series.values() for v in values if v is not None), default=1.0)
    ax.set_ylim(0, max(1.0, top) * 1.12)
    if len(series) > 1:
        ax.legend(fontsize=8, ncols=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return save_figure(fig, path)


def histograms(
    path: Path, data: Mapping[str, Sequence[float]], *, title: str, bins: int = 20, unit: bool = False
) -> Path:
    """One small histogram per named distribution, side by side (``unit``: scores, drawn on at least [0, 1])."""
    plt = pyplot()
    names = [name for name, values in data.items() if values] or list(data)[:1]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        values = list(data.get(name, []))
        if values:
            span = (min(0.0, *values), max(1.0, *values)) if unit else None
            ax.hist(values, bins=bins, range=span)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path)


# --- built-in renderers ----------------------------------------------------------------------------------------


@functools.cache
def _register_builtin() -> None:
    """Once, on first use (the renderer modules import this one); a renderer registered earlier is kept."""
    from processors.evaluation import bench_report, eval_report

    builtin: dict[str, Renderer] = {
        "eval": eval_report.eval_section,
        "retrieval": eval_report.retrieval_section,
        "replay": eval_report.replay_section,
        "latency": bench_report.latency_section,
        "concurrency": bench_report.concurrency_section,
        "goals": bench_report.goals_section,
        "benchmarks": bench_report.run_section,
    }
    for kind, renderer in builtin.items():
        _RENDERERS.setdefault(kind, renderer)
