"""`ragstream up` / `status` / `down` on a private stack: idempotent start, clean stop, clear errors."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.services._process import ServiceError, _proc_start_time
from infra.services.redis import Redis
from infra.settings import Settings
from infra.stack import INFRASTRUCTURE, Stack, free_port_block, free_ports
from tests.conftest import isolated_settings, settings_env


def _ragstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], check=False, env=env, capture_output=True, text=True, timeout=300
    )


def test_up_twice_status_and_down_leave_nothing_behind(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "data", triton_load_models="llm_echo")
    try:
        _check_up_status_down(settings)
    finally:
        Stack(settings).down()  # whatever an assertion left running


def _check_up_status_down(settings: Settings) -> None:
    env = settings_env(settings)

    first = _ragstream(env, "up")
    assert first.returncode == 0, first.stderr
    stack = Stack(settings)
    pids = {s.name: s.pid for s in stack.status(INFRASTRUCTURE)}
    assert set(pids) == {"kafka", "redis", "milvus", "triton"}
    assert all(pids.values())

    second = _ragstream(env, "up")  # harmless: nothing restarted
    assert second.returncode == 0, second.stderr
    assert {s.name: s.pid for s in stack.status(INFRASTRUCTURE)} == pids

    status = _ragstream(env, "status")
    assert status.returncode == 0
    for name in pids:
        assert any(line.split()[:2] == [name, "up"] for line in status.stdout.splitlines()), status.stdout

    triton_children = subprocess.run(
        ["pgrep", "-g", str(pids["triton"])], check=False, capture_output=True, text=True
    ).stdout.split()
    down = _ragstream(env, "down")
    assert down.returncode == 0, down.stderr

    for name, pid in pids.items():
        assert pid is not None
        assert _proc_start_time(pid) is None, f"{name} (pid {pid}) still running"
    for child in triton_children:
        assert _proc_start_time(int(child)) is None, f"triton stub {child} still running"
    # Every Python-backend region left on the machine belongs to some live process (e.g. another stack): none orphaned.
    orphaned = [r for r in glob.glob("/dev/shm/triton_python_backend_shm_region_*") if r not in _mapped_regions()]
    assert orphaned == []
    after = _ragstream(env, "status")
    assert after.returncode == 1
    assert all(line.split()[1] == "down" for line in after.stdout.splitlines()[1:]), after.stdout
    assert not list((settings.data_path / "run").glob("*.pid"))


def _mapped_regions() -> set[str]:
    from infra.services.triton import _mapped_files

    return _mapped_files()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "data")
    blocker = socket.socket()
    blocker.bind((settings.host, settings.redis_port))
    blocker.listen()
    try:
        with pytest.raises(ServiceError, match=rf"port\(s\) \[{settings.redis_port}\].*in use"):
            Redis(settings).start()
    finally:
        blocker.close()


def test_a_model_that_cannot_load_fails_fast_with_the_reason(tmp_path: Path) -> None:
    repository = tmp_path / "models" / "broken" / "1"
    repository.mkdir(parents=True)
    (repository.parent / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    (repository / "model.py").write_text("import no_such_module_for_ragstream\n")
    settings = isolated_settings(
        tmp_path / "data", triton_model_repository=str(tmp_path / "models"), start_timeout_s=120.0
    )
    stack = Stack(settings)
    with pytest.raises(ServiceError, match="triton failed to start"):
        stack.up(["triton"])
    assert stack.status(["triton"])[0].state == "down"


def _stubs_of(backend_dir: Path) -> list[int]:
    """PIDs of live Python-backend stubs whose command line names this stack's backend folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"triton_python_backend_stub" in argv and str(backend_dir).encode() in argv:
                found.append(int(entry.name))
    return found


def test_down_after_triton_was_killed_leaves_no_model_process_behind(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "data", triton_load_models="llm_echo")
    stack = Stack(settings)
    try:
        stack.up(["triton"])
        triton = stack.services["triton"]
        backend_dir = triton.backend_dir  # type: ignore[attr-defined]
        stubs = _stubs_of(backend_dir)
        assert stubs, "no model stub found for the running Triton"
        pid = triton.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # what a crash or an OOM kill does: the stubs outlive the server
        time.sleep(1.0)
        assert _stubs_of(backend_dir) == stubs
        stack.down(["triton"])
        time.sleep(0.5)
        assert _stubs_of(backend_dir) == []
    finally:
        stack.down()


def test_a_process_whose_main_thread_ended_is_running_until_its_last_thread_ends() -> None:
    """A server killed mid-request can show its main thread as a zombie while other threads still hold its sockets;
    a stop that returned then left the port taken (the Milvus restart in CI)."""
    exit_thread = {"x86_64": 60, "aarch64": 93}.get(os.uname().machine)
    if exit_thread is None:
        pytest.skip(f"no SYS_exit number known for {os.uname().machine}")
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
        f"ctypes.CDLL(None).syscall({exit_thread}, 0)\n"  # ends the main thread only
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        assert Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "Z"  # main thread gone...
        assert _proc_start_time(proc.pid) is not None  # ...but the process still runs
        proc.wait(timeout=10)
        assert _proc_start_time(proc.pid) is None
    finally:
        proc.kill()


def test_private_ports_come_from_outside_the_ephemeral_range_and_off_the_default_ports() -> None:
    """The kernel hands ephemeral ports to outgoing connections at any moment: one took a Kafka node's controller
    port between the choice and the node's bind. Private stacks choose below that range, and off the ports a
    developer's default stack would use."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    defaults = Settings()
    taken = {defaults.kafka_port, defaults.kafka_controller_port, defaults.redis_port, defaults.milvus_port,
             defaults.triton_grpc_port, defaults.bridge_port, defaults.worker_web_port}  # fmt: skip
    for _ in range(20):
        ports = free_ports(12)
        base = free_port_block(6)
        chosen = [*ports, *range(base, base + 6)]
        assert len(set(ports)) == 12 and all(p < low for p in chosen) and not taken.intersection(chosen)
