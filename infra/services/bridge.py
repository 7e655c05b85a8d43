"""A ``ragstream bridge`` process run in the background (``ragstream up bridge``) for the demo and local use.

Production runs bridges under its orchestrator (see infra/deploy); this is the same command, with a PID file.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from infra.services._process import Launch, Service


class BridgeService(Service):
    name = "bridge"

    @property
    def address(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.bridge_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.bridge_port,)

    def prepare(self) -> None:
        pass

    def launch(self) -> Launch:
        return Launch([sys.executable, "-m", "streams", "bridge"])

    def probe(self) -> str | None:
        # The bridge answers its health path only after it has replayed its reply topic and is serving.
        url = f"http://{self.settings.host}:{self.settings.bridge_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return None
        except urllib.error.HTTPError as exc:
            return f"bridge health check answered {exc.code}"
        except OSError as exc:
            return f"no bridge answer on {url} ({exc})"
