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


def time_series_grid(
    path: Path,
    panels: Sequence[tuple[str, str, Mapping[str, Sequence[tuple[float, float]]]]],
    *,
    title: str,
    columns: int = 2,
) -> Path:
    """One small line chart per panel ``(title, unit, {series name: [(unix time, value), ...]})``, time in minutes
    before the last sample (what a dashboard row shows)."""
    plt = pyplot()
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6.0 * columns, 2.8 * rows), squeeze=False)
    last = max((t for _, _, series in panels for points in series.values() for t, _ in points), default=0.0)
    for ax, (name, unit, series) in zip(axes.flat, panels, strict=False):
        for label, points in sorted(series.items()):
            if points:
                ax.plot([(t - last) / 60.0 for t, _ in points], [v for _, v in points], label=label, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_xlabel("minutes", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        if series:
            ax.legend(fontsize=7, loc="upper left", frameon=False)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
