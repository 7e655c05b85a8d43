"""Start, stop and watch one local service process: PID files, logs, readiness deadlines.

Each service runs detached in its own session (so Ctrl-C in the caller does not kill it) and is stopped by the PID
recorded at start, checked against the process start time so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from infra.settings import Settings

State = Literal["up", "starting", "down", "unhealthy"]


class ServiceError(RuntimeError):
    """A service could not be started, probed or stopped; the message says what to do."""


@dataclass(frozen=True)
class Launch:
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class Status:
    name: str
    state: State
    address: str
    pid: int | None = None
    detail: str = ""


def _proc_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    # A zombie has exited and waits to be reaped, but only once its last thread is gone: a multi-threaded server's
    # main thread turns Z first while the others still hold its sockets (num_threads, field 20, says how many).
    if fields[0] == "Z" and int(fields[17]) <= 1:
        return None
    return fields[19]


# Process n > 1 of a service run several times on one host (``local_workers``, ``local_bridges``) takes each of its
# ports + INSTANCE_PORT_STEP * (n - 1), so instances of different services never collide with each other's defaults.
INSTANCE_PORT_STEP = 10


def instance_name(base: str, n: int) -> str:
    """``worker``, ``worker-2``, ...: the first instance keeps the plain name (its PID file, its log)."""
    return base if n == 1 else f"{base}-{n}"


def instance_settings(settings: Settings, n: int, ports: Sequence[str]) -> Settings:
    """Settings of instance ``n``: the named port settings moved by :data:`INSTANCE_PORT_STEP` (0 stays off)."""
    if n < 1:
        raise ServiceError(f"instance numbers start at 1, not {n}")
    step = INSTANCE_PORT_STEP * (n - 1)
    moved = {name: getattr(settings, name) + step for name in ports if getattr(settings, name)}
    return settings.with_changes(**moved) if moved else settings


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Service(ABC):
    """One managed service. Subclasses say how to prepare, launch and probe it."""

    name: str
    #: What asks the process to shut down cleanly before the stop timeout turns it into SIGKILL.
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.data_path / "run"
        self.log_dir = settings.data_path / "logs"
        self._log_offset = 0

    # -- what a subclass provides ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def ports(self) -> Sequence[int]: ...

    @abstractmethod
    def prepare(self) -> None:
        """Fetch artifacts and lay out data folders; idempotent and quick when already done."""

    @abstractmethod
    def launch(self) -> Launch: ...

    @abstractmethod
    def probe(self) -> str | None:
        """None when ready to serve; otherwise why not (one line)."""

    def after_stop(self) -> None:
        """Clean up what the process may leave behind."""

    def fatal_error(self) -> str | None:
        """A start-up failure the process will not recover from (read from its log), to fail before the deadline."""
        return None

    # -- files ----------------------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def down_marker(self) -> Path:
        """Present while an operator's ``ragstream down`` holds the service stopped: the supervisor leaves it."""
        return self.run_dir / f"{self.name}.down"

    def running_pid(self) -> int | None:
        """The PID of this data dir's process if it is alive."""
        return self._read_pid()

    def stopped_on_purpose(self) -> bool:
        return self.down_marker.exists()

    def _read_pid(self) -> int | None:
        """The recorded PID if that very process is still alive; stale records are removed."""
        try:
            pid_text, start_time = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _proc_start_time(pid) != start_time:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    # -- lifecycle ------------------------------------------------------------------------------------------
    def status(self) -> Status:
        pid = self._read_pid()
        problem = self.probe()
        if problem is None:
            return Status(self.name, "up", self.address, pid, "" if pid else "not started by this data dir")
        if pid is None:
            return Status(self.name, "down", self.address, None, problem)
        return Status(self.name, "unhealthy", self.address, pid, problem)

    def spawn(self) -> int | None:
        """Start the process unless ours is already running. Returns the PID, or None if it was already there."""
        if self._read_pid() is not None:
            return None
        busy = [port for port in self.ports() if port_in_use(self.settings.host, port)]
        if busy:
            if self.probe() is None:
                raise ServiceError(
                    f"{self.name}: something is already serving on {self.address} but was not started from "
                    f"data dir {self.settings.data_path}; stop it or set other RAGSTREAM_* ports"
                )
            raise ServiceError(
                f"{self.name}: port(s) {busy} on {self.settings.host} are in use by another program; "
                f"free them or choose other ports (RAGSTREAM_{self.name.upper()}_PORT...)"
            )
        self.prepare()
        spec = self.launch()
        self.down_marker.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(spec.argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise ServiceError(f"{self.name}: cannot run {spec.argv[0]}: {exc}") from None
        start_time = _proc_start_time(proc.pid)
        self.pid_file.write_text(f"{proc.pid} {start_time}\n")
        return proc.pid

    def wait_ready(self, deadline: float) -> None:
        """Poll the probe until ready, the process dies, or the deadline passes (then stop it and say why)."""
        problem: str | None = "not probed"
        while time.monotonic() < deadline:
            problem = self.probe()
            if problem is None:
                return
            fatal = self.fatal_error()
            if fatal is not None:
                log_tail = tail(self.log_file)
                self.stop()
                raise ServiceError(f"{self.name} failed to start: {fatal}\nLog {self.log_file}:\n{log_tail}")
            pid = self._read_pid()
            if pid is None:
                raise ServiceError(
                    f"{self.name} exited during start-up ({problem}). Log {self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(0.2)
        log_tail = tail(self.log_file)
        self.stop()
        raise ServiceError(
            f"{self.name} was not ready before the deadline ({problem}); stopped it. Log {self.log_file}:\n{log_tail}"
        )

    def start(self) -> None:
        self.spawn()
        self.wait_ready(time.monotonic() + self.settings.start_timeout_s)

    def stop(self) -> bool:
        """Stop our process group by PID: the stop signal, then SIGKILL after the stop timeout. True if one ran."""
        pid = self._read_pid()
        if pid is None:
            self.after_stop()
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        while time.monotonic() < deadline and _proc_start_time(pid) is not None:
            time.sleep(0.1)
        if _proc_start_time(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _proc_start_time(pid) is not None:
                time.sleep(0.05)
        # Members of the group that outlived the leader (e.g. Triton's backend stubs).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.after_stop()
        return True


def wait_all_ready(services: Sequence[Service], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for service in services:
        service.wait_ready(deadline)
