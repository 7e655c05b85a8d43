"""Restart what died in the local stack, as an orchestrator's restart policy does in production (infra/deploy).

The supervisor watches the services it has seen running from this data dir. When one's recorded process is gone
(a crash, an OOM kill, ``kill -9``) it stops what the process left behind (the rest of its process group, Triton's
shared memory) and starts it again, waiting until it serves; a failed restart is tried again after a backoff that
doubles up to a minute. A service stopped on purpose (``ragstream down NAME``) is left stopped. A process that runs
but does not answer is not restarted: it may be loading or busy, and its own probe says so in ``ragstream status``.

``ragstream supervise`` runs it in the foreground; ``ragstream up supervisor`` runs it in the background with a PID
file, and ``ragstream down`` stops it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infra.services._process import Service, ServiceError
from infra.stack import Stack

log = logging.getLogger("ragstream.supervisor")

MAX_BACKOFF_S = 60.0


@dataclass
class Restart:
    """One restart attempt: which service, whether it came back, and how long it took (or why it failed)."""

    service: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class _Watch:
    service: Service
    restarts: int = 0
    failures: int = 0
    next_try: float = 0.0  # monotonic time before which a failed restart is not tried again


@dataclass
class Supervisor:
    """Keeps the services of ``stack`` (those named, or all but itself) running; see the module docstring."""

    stack: Stack
    names: Sequence[str] = ()
    clock: Callable[[], float] = time.monotonic
    _watched: dict[str, _Watch] = field(default_factory=dict)

    def candidates(self) -> list[Service]:
        chosen = self.stack.select(self.names, default=list(self.stack.services))
        return [service for service in chosen if service.name != "supervisor"]

    def check_once(self) -> list[Restart]:
        """Look at every candidate once; restart each watched one whose process is gone. Returns the attempts."""
        attempts: list[Restart] = []
        for service in self.candidates():
            if service.stopped_on_purpose():
                self._watched.pop(service.name, None)
                continue
            if service.running_pid() is not None:
                self._watched.setdefault(service.name, _Watch(service))
                continue
            watch = self._watched.get(service.name)
            if watch is None or self.clock() < watch.next_try:
                continue  # never seen running from here, or backing off after a failed restart
            attempts.append(self._restart(watch))
        return attempts

    def _restart(self, watch: _Watch) -> Restart:
        service = watch.service
        started = self.clock()
        log.warning("%s: its process is gone; restarting it", service.name)
        try:
            service.stop()  # reaps what the dead process left: the rest of its group, shared memory
            service.start()
        except ServiceError as exc:
            watch.failures += 1
            delay = min(2.0**watch.failures, MAX_BACKOFF_S)
            watch.next_try = self.clock() + delay
            log.error("%s: restart failed (next try in %.0f s): %s", service.name, delay, exc)
            return Restart(service.name, False, self.clock() - started, str(exc).splitlines()[0])
        watch.restarts += 1
        watch.failures = 0
        seconds = self.clock() - started
        log.warning("%s: restarted in %.1f s (restart %d)", service.name, seconds, watch.restarts)
        return Restart(service.name, True, seconds)

    def run(
        self, stop: threading.Event, *, interval_s: float = 2.0, heartbeat: Callable[[], None] | None = None
    ) -> None:
        """Check every ``interval_s`` until ``stop`` is set; ``heartbeat`` is called after each round."""
        while not stop.is_set():
            self.check_once()
            if heartbeat is not None:
                heartbeat()
            stop.wait(interval_s)
