"""Figures for reports, drawn with matplotlib when it is installed (the ``report`` extra).

matplotlib is imported on first use only: the shipped commands (``ragstream eval``) run without it and write their
JSON and Markdown; only the PNG figures need it, and :func:`pyplot` says how to get it when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from processors.reporting.markdown import fmt

INSTALL_HINT = "pip install 'ragstream[report]'"


class FiguresUnavailable(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures are files, benchmark machines have no display."""
    try:
        import matplotlib
    except ImportError:
        raise FiguresUnavailable(f"report figures need matplotlib, which is not installed: {INSTALL_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    try:
        pyplot()
    except FiguresUnavailable:
        return False
    return True


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
