"""Markdown pieces every report section is built from: number formatting, tables, and a section of any summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name in the report folder, caption)


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
