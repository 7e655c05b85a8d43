"""Reports people can read, from summary JSON: one Markdown section (and its figures) per summary.

Every benchmark or evaluation writes a summary JSON with a ``kind`` ("eval", "retrieval", "replay", "latency",
"concurrency", "goals", "benchmarks"). :func:`render_section` turns one summary into a Markdown section (and its PNG
figures) with the renderer registered for its kind; a kind with no renderer still appears, as a table of every number
in it, so a new benchmark's JSON is in the report before anyone writes a renderer for it. :func:`write_report` puts
the machine, date, commit and load average on top of the sections; :func:`write_run` writes a run's
``summary.json`` and ``summary.md`` together, which is what ``ragstream eval``, the pipeline benchmarks and
``benchmarks/run_all.py`` do, and ``ragstream eval report`` re-renders any of them.

Figures need the ``report`` extra (matplotlib). Without it, ``write_report(figures="auto")`` writes every section
as a table of its numbers with a note on how to get the figures; ``figures="required"`` raises
:class:`~processors.reporting.figures.FiguresUnavailable` instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from processors.reporting import figures
from processors.reporting.machine import describe_machine, git_commit, machine_info
from processors.reporting.markdown import Section, generic_section

log = logging.getLogger(__name__)

Renderer = Callable[[Mapping[str, Any], Path], Section]
FigureMode = Literal["auto", "required"]
_RENDERERS: dict[str, Renderer] = {}


def register_renderer(kind: str, renderer: Renderer) -> None:
    """Render summaries of ``kind`` with ``renderer`` (a later registration replaces an earlier one)."""
    _RENDERERS[kind] = renderer


def renderer_for(kind: str) -> Renderer:
    _register_builtin()
    return _RENDERERS.get(kind, generic_section)


def render_section(summary: Mapping[str, Any], out_dir: Path, *, figure_mode: FigureMode = "auto") -> Section:
    try:
        section = renderer_for(str(summary.get("kind", "")))(summary, out_dir)
    except figures.FiguresUnavailable as exc:
        if figure_mode == "required":
            raise
        section = generic_section(summary, out_dir)
        section.lines = [f"*Figures skipped: {exc}*", "", *section.lines]
    provenance = [f"{key} {summary[key]}" for key in ("run_id", "started_at", "git_commit") if summary.get(key)]
    if provenance:  # a combined report mixes runs: each section says which one it shows
        section.lines = [f"*Run: {', '.join(provenance).replace('git_commit', 'commit')}*", "", *section.lines]
    return section


def nested_summaries(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A summary and the summaries nested in it (values that are mappings with a ``kind``), in order."""
    found: list[Mapping[str, Any]] = [summary]
    for value in summary.values():
        if isinstance(value, Mapping) and "kind" in value:
            found.extend(nested_summaries(value))
    return found


def write_report(
    out_dir: Path,
    title: str,
    summaries: Sequence[Mapping[str, Any]],
    *,
    machine: Mapping[str, Any] | None = None,
    commit: str | None = None,
    when: dt.datetime | None = None,
    load_average_end: Sequence[float] | None = None,
    figure_mode: FigureMode = "auto",
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
        section = render_section(summary, figure_dir, figure_mode=figure_mode)
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


def write_run(out_dir: Path, title: str, summary: Mapping[str, Any], *, figure_mode: FigureMode = "auto") -> Path:
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
        figure_mode=figure_mode,
    )


@functools.cache
def _register_builtin() -> None:
    """Once, on first use; a renderer registered earlier is kept."""
    from processors.reporting import bench_sections, eval_sections

    builtin: dict[str, Renderer] = {
        "eval": eval_sections.eval_section,
        "retrieval": eval_sections.retrieval_section,
        "replay": eval_sections.replay_section,
        "eval_matrix": eval_sections.matrix_section,
        "latency": bench_sections.latency_section,
        "concurrency": bench_sections.concurrency_section,
        "interactive": bench_sections.interactive_section,
        "goals": bench_sections.goals_section,
        "benchmarks": bench_sections.run_section,
    }
    for kind, renderer in builtin.items():
        _RENDERERS.setdefault(kind, renderer)
