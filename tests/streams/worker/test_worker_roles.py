"""The worker split by role: a query worker and an ingest worker, as two processes, serve one deployment."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka_admin import ensure_topics
from infra.settings import Settings
from infra.stack import Stack, free_ports
from schemas.events import AnswerDone, QueryOptions
from streams.clients import ingest as ingest_client
from streams.clients.asker import KafkaAsker
from tests.conftest import FROBNICATOR, QUESTION, WorkerProcess, settings_env, wait_worker_ready

pytestmark = pytest.mark.services


class RoleWorker(WorkerProcess):
    def __init__(self, settings: Settings, log_path: Path, role: str) -> None:
        # ports of its own: the session's worker already holds the settings' web and metrics ports
        web_port, metrics_port = free_ports(2)
        super().__init__(settings.with_changes(worker_web_port=web_port, metrics_port=metrics_port), log_path)
        self.role = role

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--role", self.role],
            env=settings_env(self.settings),
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def split(stack: Stack, stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RoleWorker, RoleWorker]]:
    # A deployment of its own (topic prefix and app id): the session's all-role worker must not see its traffic.
    settings = stack_settings.with_changes(topic_prefix=f"roles{uuid.uuid4().hex[:6]}", app_id="roles")
    query = RoleWorker(settings, tmp_path / "query.log", "query")
    ingest = RoleWorker(settings, tmp_path / "ingest.log", "ingest")
    try:
        yield settings, query, ingest
    finally:
        query.stop()
        ingest.stop()


async def test_a_query_worker_and_an_ingest_worker_serve_one_deployment_together(
    split: tuple[Settings, RoleWorker, RoleWorker], tmp_path: Path
) -> None:
    settings, query, ingest = split
    await ensure_topics(settings)
    ingest.start()
    query.start()
    await wait_worker_ready(settings, query)  # answers a request end to end: the query role is serving
    assert query.proc is not None and ingest.proc is not None
    assert os.getpriority(os.PRIO_PROCESS, ingest.proc.pid) == 10  # bulk work yields the CPU
    assert os.getpriority(os.PRIO_PROCESS, query.proc.pid) == 0

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "frobnicator.md").write_text(FROBNICATOR)
    report = await ingest_client.ingest(settings, [docs], "acme", idle_timeout_s=120, progress=False)
    assert report.ok and report.indexed == 1, (report.errors, ingest.log()[-2000:])
    async with KafkaAsker(settings) as asker:
        request_id = await asker.send(QUESTION, tenant="acme", options=QueryOptions(model="llm_echo", use_cache=False))
        events = [event async for event in asker.events(request_id, timeout_s=60)]
    done = events[-1]
    assert isinstance(done, AnswerDone) and done.citations, (events, query.log()[-2000:])
    assert "forty-two" in done.text  # the passage the ingest worker indexed reached the query worker's prompt
