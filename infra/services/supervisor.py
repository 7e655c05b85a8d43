"""``ragstream supervise`` in the background (``ragstream up supervisor``): restarts local services that died.

It has no port; it proves it is alive by touching a heartbeat file after every round of checks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from infra.services._process import Launch, Service

INTERVAL_S = 2.0


class SupervisorService(Service):
    name = "supervisor"

    @property
    def heartbeat(self) -> Path:
        return self.run_dir / "supervisor.heartbeat"

    @property
    def address(self) -> str:
        return str(self.heartbeat)

    def ports(self) -> Sequence[int]:
        return ()

    def prepare(self) -> None:
        self.heartbeat.unlink(missing_ok=True)  # a stale one must not count as this process's

    def launch(self) -> Launch:
        return Launch(
            [sys.executable, "-m", "streams", "supervise", "--interval", str(INTERVAL_S), "--heartbeat",
             str(self.heartbeat)],
            env=self.settings.to_env(),  # it supervises this stack's data dir, whatever the caller's environment says
        )  # fmt: skip

    def probe(self) -> str | None:
        try:
            age = time.time() - self.heartbeat.stat().st_mtime
        except OSError:
            return "no heartbeat yet"
        if age > 3 * INTERVAL_S + 5:
            return f"last heartbeat {age:.0f} s ago"
        return None
