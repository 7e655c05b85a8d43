"""``ragstream worker`` processes run in the background for the demo and for operators trying the stack locally.

Production runs workers under its orchestrator (see infra/deploy); this is the same command, with a PID file.
``local_workers`` > 1 runs several on this host (``worker``, ``worker-2``, ...): one consumer group, so the topics'
partitions are shared among them and a dead one's partitions move to the others after the group's session timeout.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from infra.services._process import Launch, Service, ServiceError, instance_name, instance_settings
from infra.settings import Settings

# The ports a second worker on the same host must not share with the first.
_PORTS = ("worker_web_port", "metrics_port")


class WorkerService(Service):
    """Worker process ``instance`` (1-based) of this host, with the agents of ``role`` (``ragstream worker --role``:
    all, query or ingest; a split pair takes two instance numbers, so each has ports of its own)."""

    def __init__(self, settings: Settings, instance: int = 1, *, role: str = "all") -> None:
        super().__init__(instance_settings(settings, instance, _PORTS))
        self.role = role
        self.name = instance_name("worker" if role == "all" else f"worker-{role}", instance)

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.worker_web_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.worker_web_port,)

    def prepare(self) -> None:
        pass

    def launch(self) -> Launch:
        role = [] if self.role == "all" else ["--role", self.role]
        return Launch([sys.executable, "-m", "streams", "worker", *role], env=self.settings.to_env())

    def probe(self) -> str | None:
        # Faust's web server answers once the app has started its services.
        try:
            with urllib.request.urlopen(self.address + "/", timeout=1.0):
                return None
        except urllib.error.HTTPError:
            return None  # any HTTP answer means the worker is up
        except OSError as exc:
            return f"no worker answer on {self.address} ({exc})"


def worker_instances(settings: Settings) -> list[WorkerService]:
    if settings.local_workers < 1:
        raise ServiceError(f"local_workers must be 1 or more, not {settings.local_workers}")
    return [WorkerService(settings, n) for n in range(1, settings.local_workers + 1)]
