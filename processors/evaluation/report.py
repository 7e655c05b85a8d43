"""Reports people can read: machine facts, Markdown, and matplotlib figures, from summary JSON.

Every benchmark or evaluation writes a summary JSON with a ``kind`` ("eval", "replay", and later "latency",
"concurrency", ...). :func:`render_section` turns one summary into a Markdown section (and its PNG figures) with the
renderer registered for its kind; a kind with no renderer still appears, as a table of every number in it, so a new
benchmark's JSON is in the report before anyone writes a renderer for it. :func:`write_report` puts the machine,
date and commit on top of the sections, which is what ``ragstream eval`` and ``ragstream eval report`` write.
"""

from __future__ import annotations

import datetime as dt
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
    if not _RENDERERS:
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
    """What the numbers were measured on: usable CPUs (``nproc``), memory, CPU model, OS and Python."""
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
    }


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
) -> Path:
    """Write ``summary.md`` in ``out_dir``: machine, date and commit, then one section per summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(machine or machine_info())
    stamp = (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [
        f"# {title}",
        "",
        f"- Date: {stamp}",
        f"- Commit: `{commit or git_commit()}`",
        f"- Machine: {info.get('nproc')} CPUs (`nproc`), {fmt(info.get('memory_gib'), 1)} GiB memory, "
        f"{info.get('cpu_model')}; {info.get('os')}, Python {info.get('python')}",
        "",
    ]
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


# --- figures ---------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    path: Path, groups: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str, ylabel: str
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (None plots as 0, labelled n/a)."""
    plt = _pyplot()
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def histograms(
    path: Path, data: Mapping[str, Sequence[float]], *, title: str, bins: int = 20, unit: bool = False
) -> Path:
    """One small histogram per named distribution, side by side (``unit``: scores, drawn on at least [0, 1])."""
    plt = _pyplot()
    names = [name for name, values in data.items() if values] or list(data)[:1]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        values = list(data.get(name, []))
        if values:
            span = (min(0.0, *values), max(1.0, *values)) if unit else None
            ax.hist(values, bins=bins, range=span)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- built-in renderers ----------------------------------------------------------------------------------------


def _register_builtin() -> None:
    from processors.evaluation import eval_report

    register_renderer("eval", eval_report.eval_section)
    register_renderer("retrieval", eval_report.retrieval_section)
    register_renderer("replay", eval_report.replay_section)
