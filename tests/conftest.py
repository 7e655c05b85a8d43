"""Fixtures that run the real services for the tests.

The test stack lives in its own data dir on free ports, so it never touches a developer's running stack; it is
started once per session by the project's own :class:`infra.stack.Stack` and stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import connect

from infra.settings import REPO_ROOT, Settings
from infra.stack import Stack, private_settings
from streams.clients import ingest as ingest_client
from tests.span_receiver import SpanReceiver

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")


@pytest.fixture(scope="session")
def python_docs() -> Path:
    """The Python 3.11 docs corpus; set-up installs it, so its absence is a broken set-up, not a reason to skip."""
    if not (PYTHON_DOCS / "faq" / "general.html").exists():
        pytest.fail("the Python 3.11 docs are missing: apt-get install -y python3.11-doc (infra/scripts/setup.sh does)")
    return PYTHON_DOCS


def deploy_validate() -> ModuleType:
    """infra/deploy/validate.py, loaded from its file (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("deploy_validate", REPO_ROOT / "infra" / "deploy" / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def isolated_settings(data_dir: Path, **overrides: object) -> Settings:
    """A private stack for the tests: two partitions per topic keep rebalances quick."""
    # "model_that_does_not_exist" is offered to clients but served by nothing: how tests make a model fail.
    # llm_echo streams the whole RAG prompt back: tests that need it uncut ask for more than the default 1024 tokens.
    defaults: dict[str, object] = {
        "topic_partitions": 2,
        "start_timeout_s": 420.0,  # a loaded or slow machine loads six Triton models slowly
        "offered_models": "model_that_does_not_exist",
        "max_answer_tokens": 4096,
    }
    return private_settings(data_dir, **{**defaults, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment for a subprocess (worker, CLI) that must use ``settings``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}, **settings.to_env()}


@pytest.fixture(scope="session")
def span_receiver() -> Iterator[SpanReceiver]:
    """Where the test stack's worker and bridges export their spans (OTLP/gRPC), as they would to a collector."""
    receiver = SpanReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory, span_receiver: SpanReceiver) -> Settings:
    return isolated_settings(tmp_path_factory.mktemp("stack"), otlp_endpoint=span_receiver.endpoint)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    stack = Stack(stack_settings)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


class WorkerProcess:
    """``ragstream worker`` as a real subprocess (its own Kafka consumer group, like production)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


KEY = "test-key"  # the API key test bridges accept (tenant "acme")


class BridgeProcess:
    """``ragstream bridge`` as a real subprocess, stopped with SIGTERM like an orchestrator does."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "bridge"],
            env=settings_env(settings),
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.bridge_port}"

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        health = f"http://127.0.0.1:{self.settings.bridge_port}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited:\n{self.log()[-3000:]}")
            try:
                await asyncio.to_thread(urllib.request.urlopen, health, timeout=1.0)
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"bridge not ready:\n{self.log()[-3000:]}")

    def terminate(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def client(url: str, key: str = KEY, **kwargs: Any) -> connect:
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=30, **kwargs)


async def wait_worker_ready(settings: Settings, worker: WorkerProcess, timeout_s: float = 120.0) -> None:
    """Ready means a request made the full round trip through Kafka, the worker and Triton."""
    from streams.clients.asker import wait_for_worker

    def alive() -> None:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log()[-4000:]}")

    try:
        await wait_for_worker(settings, timeout_s=timeout_s, attempt_s=5.0, check=alive)
    except TimeoutError:
        raise RuntimeError(f"worker not ready after {timeout_s}s:\n{worker.log()[-4000:]}") from None


@pytest.fixture(scope="session")
async def worker(
    stack: Stack, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(stack_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    process.start()
    try:
        await wait_worker_ready(stack_settings, process)
        yield process
    finally:
        process.stop()


# --- a small two-tenant corpus, ingested through Kafka once per session -------------------------------------

FROBNICATOR = """# Frobnicator manual

## Configuring the timeout

The frobnicator timeout is configured with the FROB_TIMEOUT setting. It is measured in seconds and defaults to
forty-two. Set it in the frobnicator.toml file under the [limits] table.

## Resetting the frobnicator

To reset the frobnicator, hold the blue button for nine seconds until the lamp blinks twice.
"""

GARDEN = """# Garden notes

## Watering tomatoes

Tomatoes need deep watering twice a week; shallow daily watering makes roots lazy.
"""

QUESTION = "How is the frobnicator timeout configured?"
# llm_echo streams its prompt back at 5 ms a word: a long question makes an answer that lasts a few seconds.
LONG_QUESTION = QUESTION + " " + " ".join(["Please explain the frobnicator timeout setting in detail."] * 80)


async def ingest_folder(settings: Settings, folder: Path, tenant: str) -> None:
    report = await ingest_client.ingest(settings, [folder], tenant, timeout_s=180, progress=False)
    assert report.ok, report.errors


@pytest.fixture(scope="session")
def tenants() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"acme{suffix}", f"globex{suffix}"


@pytest.fixture(scope="session")
async def corpus(
    worker: WorkerProcess, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory, tenants: tuple[str, str]
) -> dict[str, Path]:
    acme, globex = tenants
    a = tmp_path_factory.mktemp("acme")
    (a / "frobnicator.md").write_text(FROBNICATOR)
    b = tmp_path_factory.mktemp("globex")
    (b / "garden.md").write_text(GARDEN)
    await ingest_folder(stack_settings, a, acme)
    await ingest_folder(stack_settings, b, globex)
    return {acme: a, globex: b}
