"""Prometheus for the local stack (the ``observability`` part of ``ragstream up``), from Debian's ``prometheus``
package (``apt-get install prometheus``; infra/scripts/setup.sh installs it).

It scrapes the worker (``metrics_port``), the bridge (``bridge_metrics_port``) and Triton's own endpoint
(``triton_metrics_port``) on this host, keeps its TSDB under ``<data dir>/prometheus`` and serves its UI and HTTP
API on ``prometheus_port``. The production scrape configuration is ``infra/deploy/prometheus.yml``; this one is
written from settings at each start, so the ports always match the stack's.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from infra.services._process import Launch, Service, ServiceError
from infra.services.bridge import bridge_instances
from infra.services.worker import worker_instances
from infra.settings import Settings

BINARY = "prometheus"


def scrape_targets(settings: Settings) -> dict[str, list[str]]:
    """Job name -> ``host:port`` of every process the local Prometheus scrapes (each worker and bridge of this host)."""
    workers = [worker.settings for worker in worker_instances(settings)]
    bridges = [bridge.settings for bridge in bridge_instances(settings)]
    targets = {
        "ragstream-worker": [f"{settings.host}:{s.metrics_port}" for s in workers if s.metrics_port],
        "ragstream-bridge": [f"{settings.host}:{s.bridge_metrics_port}" for s in bridges if s.bridge_metrics_port],
    }
    if settings.triton_metrics and settings.triton_metrics_port:
        targets["triton"] = [f"{settings.host}:{settings.triton_metrics_port}"]
    if settings.prometheus_port:
        targets["prometheus"] = [f"{settings.host}:{settings.prometheus_port}"]
    return {job: hosts for job, hosts in targets.items() if hosts}


def config_text(settings: Settings) -> str:
    """prometheus.yml for the local stack (JSON is valid YAML, so no YAML writer is needed)."""
    interval = f"{max(settings.prometheus_scrape_interval_s, 0.5):g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in scrape_targets(settings).items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


class Prometheus(Service):
    name = "prometheus"

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prometheus_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.prometheus_port,)

    @property
    def home(self) -> Path:
        return self.settings.data_path / "prometheus"

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    def binary(self) -> str:
        found = shutil.which(BINARY)
        if found is None:
            raise ServiceError(
                "prometheus: the prometheus binary is not installed; apt-get install -y prometheus "
                "(infra/scripts/setup.sh installs it)"
            )
        return found

    def prepare(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config_text(self.settings))

    def launch(self) -> Launch:
        s = self.settings
        return Launch(
            [
                self.binary(),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--storage.tsdb.retention.time={s.prometheus_retention}",
                f"--web.listen-address={s.host}:{s.prometheus_port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            cwd=self.home,
        )

    def probe(self) -> str | None:
        url = f"{self.address}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return None
        except urllib.error.HTTPError as exc:
            return f"Prometheus not ready (HTTP {exc.code})"
        except OSError as exc:
            return f"no Prometheus answer on {url} ({exc})"
