"""A ``ragstream worker`` process run in the background for the demo and for operators trying the stack locally.

Production runs workers under its orchestrator (see infra/deploy); this is the same command, with a PID file.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from infra.services._process import Launch, Service


class WorkerService(Service):
    name = "worker"

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.worker_web_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.worker_web_port,)

    def prepare(self) -> None:
        pass

    def launch(self) -> Launch:
        return Launch([sys.executable, "-m", "streams", "worker"])

    def probe(self) -> str | None:
        # Faust's web server answers once the app has started its services.
        try:
            with urllib.request.urlopen(self.address + "/", timeout=1.0):
                return None
        except urllib.error.HTTPError:
            return None  # any HTTP answer means the worker is up
        except OSError as exc:
            return f"no worker answer on {self.address} ({exc})"
