"""Reading the stack's metrics back from Prometheus's HTTP API, with the dashboard's own expressions.

``ragstream metrics`` prints the values of the on-call row of the Grafana dashboard
(``infra/deploy/grafana/dashboards/ragstream.json``) and can plot a few of its panels over the last minutes, so an
operator sees locally what production's Grafana shows, from the same PromQL.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import REPO_ROOT, Settings

DASHBOARD = REPO_ROOT / "infra" / "deploy" / "grafana" / "dashboards" / "ragstream.json"
# The panels `ragstream metrics --plot` draws, by dashboard title.
PLOTTED = (
    "Time to first token",
    "Requests/s by outcome",
    "Query step latency p95",
    "Semantic cache hit ratio",
    "Consumer lag by topic",
    "Triton queue time per request",
)


class PrometheusError(RuntimeError):
    """Prometheus is not reachable or refused a query; the message says which and why."""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "stat" or "timeseries"
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL with Grafana variables, legend format)


def dashboard_panels(path: Path = DASHBOARD) -> list[Panel]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return [
        Panel(
            title=str(panel["title"]),
            kind=str(panel["type"]),
            unit=str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")),
            targets=tuple((str(t["expr"]), str(t.get("legendFormat", ""))) for t in panel.get("targets", [])),
        )
        for panel in dashboard["panels"]
        if panel.get("type") != "row"
    ]


def promql(expr: str, *, window: str) -> str:
    """A dashboard expression with Grafana's interval variables replaced by ``window`` (e.g. ``1m``)."""
    for variable in ("$__rate_interval", "$__range", "$__interval"):
        expr = expr.replace(variable, window)
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format, filled in."""
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


class PrometheusQueries:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    @classmethod
    def local(cls, settings: Settings) -> PrometheusQueries:
        return cls(f"http://{settings.host}:{settings.prometheus_port}")

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
        except OSError as exc:
            hint = "start it: ragstream up observability"
            raise PrometheusError(f"no Prometheus at {self.base_url} ({exc}); {hint}") from None
        if answer.get("status") != "success":
            raise PrometheusError(f"{url}: {answer.get('error', answer)}")
        return answer["data"]["result"]

    def instant(self, expr: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(r["metric"]), float(r["value"][1])) for r in self._get("/api/v1/query", {"query": expr})]

    def series(
        self, expr: str, *, minutes: float, step_s: float, end: float | None = None
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        end = time.time() if end is None else end
        params = {"query": expr, "start": f"{end - minutes * 60:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        return [
            (dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"] if not math.isnan(float(v))])
            for r in self._get("/api/v1/query_range", params)
        ]


def format_value(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return "no data"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "reqps":
        return f"{value:.2f}/s"
    return f"{value:.4g}"


def oncall_row(queries: PrometheusQueries, *, window: str) -> list[tuple[str, str]]:
    """``(panel title, value)`` for each stat panel of the dashboard, evaluated now."""
    rows = []
    for panel in dashboard_panels():
        if panel.kind != "stat":
            continue
        values = [
            f"{legend(fmt, labels)} {format_value(value, panel.unit)}"
            for expr, fmt in panel.targets
            for labels, value in queries.instant(promql(expr, window=window))
        ]
        rows.append((panel.title, ", ".join(values) or "no data"))
    return rows


def plot_panels(
    queries: PrometheusQueries,
    path: Path,
    *,
    minutes: float,
    window: str,
    step_s: float,
    title: str,
    end: float | None = None,
) -> Path:
    """The :data:`PLOTTED` panels over the ``minutes`` before ``end`` (default now), one small chart each (needs
    the ``report`` extra)."""
    from processors.reporting.figures import time_series_grid

    by_title = {panel.title: panel for panel in dashboard_panels()}
    drawn = []
    for name in PLOTTED:
        panel = by_title[name]
        series = {
            legend(fmt, labels): points
            for expr, fmt in panel.targets
            for labels, points in queries.series(promql(expr, window=window), minutes=minutes, step_s=step_s, end=end)
        }
        drawn.append((name, panel.unit.replace("percentunit", "ratio"), series))
    return time_series_grid(path, drawn, title=title)
