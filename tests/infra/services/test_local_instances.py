"""Scale-out on one host: ``local_workers`` / ``local_bridges`` > 1 run numbered workers and bridges on their own
ports; the workers share one consumer group, each bridge answers, and a killed worker's partitions move to the
other worker without anything being restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from infra.kafka_admin import ensure_topics
from infra.kafka_security import admin_client
from infra.services._process import INSTANCE_PORT_STEP, ServiceError, _proc_start_time
from infra.services.bridge import BridgeService
from infra.services.prometheus import scrape_targets
from infra.services.worker import WorkerService
from infra.settings import Settings
from infra.stack import Stack, free_ports
from tests.conftest import client

pytestmark = pytest.mark.services

SCALE_KEY = "scale-out-key"


def test_second_instances_take_their_own_ports_names_and_reply_topic(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path), local_workers=2, local_bridges=2, bridge_instance="edge")
    stack = Stack(settings)
    assert [name for name in stack.services if name.split("-")[0] in ("worker", "bridge")] == [
        "worker", "worker-2", "bridge", "bridge-2"
    ]  # fmt: skip
    assert [s.name for s in stack.select(["bridge"])] == ["bridge", "bridge-2"]  # "bridge" names both
    second = stack.services["worker-2"].settings
    assert second.worker_web_port == settings.worker_web_port + INSTANCE_PORT_STEP
    assert second.metrics_port == settings.metrics_port + INSTANCE_PORT_STEP
    edge2 = stack.services["bridge-2"]
    assert isinstance(edge2, BridgeService)
    assert edge2.settings.bridge_port == settings.bridge_port + INSTANCE_PORT_STEP
    assert edge2.settings.bridge_instance == "edge-2" and stack.services["bridge"].settings.bridge_instance == "edge"
    # The process is launched with its own settings, whatever the caller's environment holds.
    env = edge2.launch().env
    assert env["RAGSTREAM_BRIDGE_PORT"] == str(edge2.settings.bridge_port)
    assert env["RAGSTREAM_BRIDGE_INSTANCE"] == "edge-2"
    assert scrape_targets(settings)["ragstream-bridge"] == [
        f"{settings.host}:{settings.bridge_metrics_port}",
        f"{settings.host}:{settings.bridge_metrics_port + INSTANCE_PORT_STEP}",
    ]


def test_a_role_worker_runs_its_role_under_a_name_of_its_own(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path))
    ingest = WorkerService(settings, 2, role="ingest")
    assert ingest.name == "worker-ingest-2"
    assert ingest.launch().argv[-2:] == ["--role", "ingest"]
    assert ingest.settings.worker_web_port == settings.worker_web_port + INSTANCE_PORT_STEP
    assert "--role" not in WorkerService(settings).launch().argv  # the default role, as `ragstream up` runs it


def test_zero_workers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="local_workers must be 1 or more"):
        Stack(Settings.from_env({}, data_dir=str(tmp_path), local_workers=0))


async def group_members(settings: Settings) -> int:
    admin = await admin_client(settings)
    try:
        [response] = await admin.describe_consumer_groups([settings.app_id])
        [group] = response.to_object()["groups"]
        return len(group["members"])
    finally:
        await admin.close()


async def ask_echo(url: str, question: str) -> dict[str, Any]:
    """One question on its own socket; the last message (done or error)."""
    options = {"model": "llm_echo", "use_cache": False, "max_tokens": 8}
    async with client(url, SCALE_KEY) as ws:
        await ws.send(json.dumps({"type": "ask", "id": "q", "question": question, "options": options}))
        async with asyncio.timeout(90):
            async for frame in ws:
                message: dict[str, Any] = json.loads(frame)
                if message["type"] in ("done", "error"):
                    return message
    raise AssertionError("socket closed before done or error")


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _proc_start_time(pid) is not None:
        assert time.monotonic() < deadline, f"{pid} did not die"
        time.sleep(0.05)


async def wait_members(settings: Settings, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    members = -1
    while members != count:
        try:
            members = await group_members(settings)
        except KafkaError:  # the group's coordinator is still being chosen
            members = -1
        if members == count:
            break
        assert time.monotonic() < deadline, f"consumer group has {members} members, expected {count}"
        await asyncio.sleep(1.0)


async def test_two_workers_share_the_group_both_bridges_answer_and_a_killed_workers_share_moves(
    stack: Stack, stack_settings: Settings, tmp_path: Path
) -> None:
    ports = free_ports(4)
    settings = stack_settings.with_changes(
        data_dir=str(tmp_path / "scale"),
        topic_prefix="scaleout",  # its own topics and group: the session's worker never sees these questions
        app_id="scaleout",
        worker_web_port=ports[0],
        metrics_port=ports[1],
        bridge_port=ports[2],
        bridge_metrics_port=ports[3],
        local_workers=2,
        local_bridges=2,
        # A key of its own: the quotas (shared through Redis) of the session's other bridges' key do not apply here.
        api_keys=f"{SCALE_KEY}:acme",
        request_timeout_s=90.0,  # a dead member leaves the group after its session timeout, then a rebalance
    )
    await ensure_topics(settings)
    scaled = Stack(settings)
    try:
        await asyncio.to_thread(scaled.up, ["worker", "bridge"])
        assert [s.name for s in scaled.status(["worker", "bridge"]) if s.state == "up"] == [
            "worker", "worker-2", "bridge", "bridge-2"
        ]  # fmt: skip
        await wait_members(settings, 2, 60)
        urls = [scaled.services[name].address for name in ("bridge", "bridge-2")]
        answers = await asyncio.gather(*(ask_echo(url, f"Question {i} about the frobnicator?") for i, url in
                                         enumerate(urls * 2)))  # fmt: skip
        assert [a["type"] for a in answers] == ["done"] * 4, [a for a in answers if a["type"] != "done"]

        pid = scaled.services["worker"].running_pid()
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        await asyncio.to_thread(wait_gone, pid)
        # Nothing restarts it: the group drops the dead member after its session timeout and worker-2 takes every
        # partition. Eight questions through both bridges land on both partitions and are all answered.
        answers = await asyncio.gather(*(ask_echo(url, f"Afterwards {i}: how is it reset?") for i, url in
                                         enumerate(urls * 4)))  # fmt: skip
        assert [a["type"] for a in answers] == ["done"] * 8, [a for a in answers if a["type"] != "done"]
        assert await group_members(settings) == 1
    finally:
        await asyncio.to_thread(scaled.down, ["worker", "bridge"])
