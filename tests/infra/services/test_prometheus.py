"""The observability part of `ragstream up`: Debian's Prometheus, configured from settings, stopped by PID."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from infra.services._process import _proc_start_time
from infra.stack import Stack, private_settings


def test_observability_starts_a_prometheus_that_scrapes_the_stack_and_stops_by_pid(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "stack", prometheus_scrape_interval_s=1.0)
    stack = Stack(settings)
    try:
        [status] = stack.up(["observability"])
        assert status.name == "prometheus" and status.state == "up" and status.pid is not None
        config = json.loads((settings.data_path / "prometheus" / "prometheus.yml").read_text())
        targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
        assert targets == {
            "ragstream-worker": f"127.0.0.1:{settings.metrics_port}",
            "ragstream-bridge": f"127.0.0.1:{settings.bridge_metrics_port}",
            "triton": f"127.0.0.1:{settings.triton_metrics_port}",
            "prometheus": f"127.0.0.1:{settings.prometheus_port}",
        }
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it scrapes itself: the API answers with real samples
            url = f"{status.address}/api/v1/query?query=up"
            with urllib.request.urlopen(url, timeout=5) as response:
                result = json.loads(response.read())["data"]["result"]
            up = {r["metric"]["job"]: r["value"][1] for r in result}
            if up.get("prometheus") == "1" and set(up) == set(targets):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"Prometheus never scraped itself: {result}")
        # Nothing serves the other targets in this test: Prometheus tried them and saw them down.
        assert {job for job, value in up.items() if value == "0"} == {"ragstream-worker", "ragstream-bridge", "triton"}
        assert any((settings.data_path / "prometheus" / "data").iterdir())
    finally:
        stopped = dict(stack.down(["observability"]))
    assert stopped == {"prometheus": True}
    assert _proc_start_time(status.pid) is None
    assert not (settings.data_path / "run" / "prometheus.pid").exists()
