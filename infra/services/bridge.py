"""``ragstream bridge`` processes run in the background (``ragstream up bridge``) for the demo and local use.

Production runs bridges under its orchestrator (see infra/deploy); this is the same command, with a PID file.
``local_bridges`` > 1 runs several on this host (``bridge``, ``bridge-2``, ...), each on its own port with its own
instance name and reply topic; a client resumes on the instance it asked (the one that journals its request).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from infra.services._process import Launch, Service, ServiceError, instance_name, instance_settings
from infra.settings import Settings

_PORTS = ("bridge_port", "bridge_metrics_port")


class BridgeService(Service):
    """Bridge process ``instance`` (1-based) of this host."""

    def __init__(self, settings: Settings, instance: int = 1) -> None:
        moved = instance_settings(settings, instance, _PORTS)
        if instance > 1 and settings.bridge_instance:  # a fixed name stays fixed, and distinct per instance
            moved = moved.with_changes(bridge_instance=f"{settings.bridge_instance}-{instance}")
        super().__init__(moved)
        self.name = instance_name("bridge", instance)

    @property
    def address(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.bridge_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.bridge_port,)

    def prepare(self) -> None:
        pass

    def launch(self) -> Launch:
        return Launch([sys.executable, "-m", "streams", "bridge"], env=self.settings.to_env())

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


def bridge_instances(settings: Settings) -> list[BridgeService]:
    if settings.local_bridges < 1:
        raise ServiceError(f"local_bridges must be 1 or more, not {settings.local_bridges}")
    return [BridgeService(settings, n) for n in range(1, settings.local_bridges + 1)]
