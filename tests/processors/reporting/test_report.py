"""The report generator: any summary JSON becomes a section, and renderers can be added."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from processors.reporting.figures import FiguresUnavailable
from processors.reporting.report import register_renderer, write_report


def test_report_takes_any_benchmark_json(tmp_path: Path) -> None:
    """A later benchmark's summary shows up as a table before it has a renderer, and a renderer can be added."""
    new = {"kind": "throughput", "title": "Throughput", "rates": {"1qps": {"ttft_ms": {"p50": 120.5, "p99": 300.0}}}}
    path = write_report(tmp_path, "combined", [new], machine={"nproc": 2}, commit="abc")
    text = path.read_text()
    assert "## Throughput" in text and "rates.1qps.ttft_ms.p99" in text and "300.000" in text
    assert "Commit: `abc`" in text and "2 CPUs" in text
    from processors.reporting.markdown import Section

    register_renderer("concurrency-test", lambda s, out: Section("Custom", [f"clients: {s['clients']}"]))
    text = write_report(tmp_path, "again", [{"kind": "concurrency-test", "clients": 1000}]).read_text()
    assert "## Custom" in text and "clients: 1000" in text


EVAL = {
    "kind": "eval",
    "title": "Evaluation",
    "cases": 2,
    "quality": {"pass_rate": 0.5},
    "refusals": {},
    "latency_ms": {"ttft": {"p50": 100.0}, "total": {"p50": 900.0}},
    "distributions": {"groundedness": [0.5, 1.0]},
    "by_tag": {},
}


def test_a_report_without_matplotlib_keeps_its_numbers_and_says_how_to_get_the_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the report extra looks like
    text = write_report(tmp_path, "no figures", [EVAL], machine={"nproc": 2}, commit="abc").read_text()
    assert "Figures skipped" in text and "pip install 'ragstream[report]'" in text
    assert "quality.pass_rate" in text and "0.500" in text
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(FiguresUnavailable, match=r"ragstream\[report\]"):
        write_report(tmp_path, "required", [EVAL], machine={"nproc": 2}, commit="abc", figure_mode="required")


def test_a_report_with_matplotlib_draws_the_eval_figures(tmp_path: Path) -> None:
    text = write_report(tmp_path, "figures", [EVAL], machine={"nproc": 2}, commit="abc").read_text()
    assert "Figures skipped" not in text
    assert list(tmp_path.glob("*.png"))
