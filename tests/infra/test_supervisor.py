"""The supervisor restarts a service whose process was killed, leaves one stopped on purpose, and backs off after a
failed restart. Real Redis on a private data dir, killed with SIGKILL by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from infra.services._process import ServiceError, _proc_start_time
from infra.stack import Stack
from infra.supervisor import Supervisor
from tests.conftest import isolated_settings, settings_env

pytestmark = pytest.mark.services


def kill(stack: Stack, name: str) -> int:
    pid = stack.services[name].running_pid()
    assert pid is not None, f"{name} is not running"
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _proc_start_time(pid) is not None:
        assert time.monotonic() < deadline, f"{name} did not die"
        time.sleep(0.05)
    return pid


def test_a_killed_service_is_restarted_and_one_stopped_with_down_is_left_alone(tmp_path: Path) -> None:
    stack = Stack(isolated_settings(tmp_path / "data"))
    try:
        stack.up(["redis"])
        client = redis.Redis.from_url(stack.services["redis"].address)
        client.set("kept", "yes")
        supervisor = Supervisor(stack)
        assert supervisor.check_once() == []  # all running: nothing to do, but redis is now watched

        old = kill(stack, "redis")
        (restart,) = supervisor.check_once()
        assert restart.service == "redis" and restart.ok, restart
        new = stack.services["redis"].running_pid()
        assert new is not None and new != old
        assert client.get("kept") == b"yes"  # the same data dir, served again
        assert supervisor.check_once() == []

        stack.down(["redis"])  # an operator's stop is not a crash
        assert supervisor.check_once() == []
        assert stack.services["redis"].running_pid() is None
        stack.up(["redis"])  # started again: watched again
        supervisor.check_once()
        kill(stack, "redis")
        assert [r.service for r in supervisor.check_once()] == ["redis"]
        client.close()
    finally:
        stack.down()


def test_a_failed_restart_is_retried_after_a_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    stack = Stack(isolated_settings(tmp_path / "data"))
    try:
        stack.up(["redis"])
        supervisor = Supervisor(stack, ["redis"], clock=lambda: now[0])
        supervisor.check_once()
        kill(stack, "redis")
        service = stack.services["redis"]

        def refuse() -> None:
            raise ServiceError("redis: port taken")

        monkeypatch.setattr(service, "start", refuse)  # a restart that cannot succeed (e.g. the port is taken)
        (failed,) = supervisor.check_once()
        assert not failed.ok and "port taken" in failed.error
        assert supervisor.check_once() == []  # backing off
        now[0] += 2.5
        (again,) = supervisor.check_once()
        assert not again.ok
        now[0] += 3.0  # the backoff doubled to 4 s
        assert supervisor.check_once() == []
        monkeypatch.undo()
        now[0] += 1.5
        (restarted,) = supervisor.check_once()
        assert restarted.ok and service.running_pid() is not None
    finally:
        stack.down()


def test_up_supervisor_restarts_a_killed_service_in_the_background_and_down_stops_both(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "data")
    stack = Stack(settings)
    env = settings_env(settings)
    try:
        up = subprocess.run(
            [sys.executable, "-m", "streams", "up", "redis", "supervisor"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert stack.services["supervisor"].status().state == "up"
        time.sleep(2.5)  # one round of checks, so redis is watched
        old = kill(stack, "redis")
        deadline = time.monotonic() + 30
        while (pid := stack.services["redis"].running_pid()) is None or stack.services["redis"].probe() is not None:
            assert time.monotonic() < deadline, "the supervisor did not restart redis"
            time.sleep(0.2)
        assert pid != old
        # The supervisor logs the restart once its own readiness wait returns, which can be after redis answers.
        log_file = stack.services["supervisor"].log_file
        while "redis: restarted" not in log_file.read_text():
            assert time.monotonic() < deadline, f"no restart logged: {log_file.read_text()}"
            time.sleep(0.2)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "streams", "down"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert down.returncode == 0, down.stderr
    assert [s.name for s in stack.status() if s.pid is not None] == []
