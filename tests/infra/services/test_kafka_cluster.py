"""A 3-node KRaft cluster started by the project on this machine (replication factor 3, min.insync.replicas 2):
every record acknowledged with acks=all survives kill -9 of a broker, and the cluster keeps serving without it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from infra.kafka_security import admin_client, client_options
from infra.services._process import ServiceError
from infra.services.kafka import Kafka
from infra.settings import Settings
from infra.stack import Stack, free_port_block
from schemas.codec import EventDecoder
from schemas.events import DeadLetter
from schemas.topics import Topic
from tests.conftest import isolated_settings, settings_env

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = free_port_block(6)
    settings = isolated_settings(
        tmp_path_factory.mktemp("kafka-cluster"), kafka_brokers=3, kafka_port=base, kafka_controller_port=base + 1
    )
    stack = Stack(settings)
    try:
        stack.up(["kafka"])  # three nodes, then the topics
        yield stack
    finally:
        stack.down(["kafka"])  # by the PIDs they wrote


def nodes(stack: Stack) -> list[Kafka]:
    return [service for service in stack.services.values() if isinstance(service, Kafka)]


async def replica_state(settings: Settings, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, in-sync replicas), from fresh metadata. A node that joined a moment ago may
    not list a new topic yet (its metadata lags the controller's), so ask again for a while before giving up."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            metadata = await consumer._client.fetch_all_metadata()
            partitions = metadata._partitions.get(topic)
            if partitions or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert partitions, f"{topic} is not in the cluster's metadata"
        return {p: (m.leader, list(m.replicas), list(m.isr)) for p, m in partitions.items()}
    finally:
        await consumer.stop()


def test_three_nodes_serve_topics_with_three_replicas_two_in_sync(cluster: Stack) -> None:
    settings = cluster.settings
    assert [node.name for node in nodes(cluster)] == ["kafka", "kafka-2", "kafka-3"]
    assert all(status.state == "up" for status in cluster.status(["kafka"]))
    assert settings.replication_factor == 3 and settings.min_insync_replicas == 2
    assert len(settings.kafka_servers.split(",")) == 3
    state = asyncio.run(replica_state(settings, settings.topic(Topic.QUERIES)))
    assert len(state) == settings.topic_partitions
    for leader, replicas, isr in state.values():
        assert sorted(replicas) == [1, 2, 3] and sorted(isr) == [1, 2, 3] and leader in replicas
    # acks=all then waits for two brokers (a broker default too: Faust's offsets topic is created on first use).
    for topic in (settings.topic(Topic.QUERIES), settings.topic(Topic.PROMPTS)):
        assert asyncio.run(topic_config(settings, topic, "min.insync.replicas")) == "2", topic


async def topic_config(settings: Settings, topic: str, key: str) -> str | None:
    admin = await admin_client(settings)
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})])
        entries = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
        return entries.get(key)
    finally:
        await admin.close()


async def test_acknowledged_records_survive_kill_9_of_a_broker_and_the_cluster_keeps_serving(cluster: Stack) -> None:
    settings = cluster.settings
    topic = settings.topic(Topic.QUERIES)
    before = await replica_state(settings, topic)
    victim_id = before[0][0]  # the leader of partition 0: the hardest broker to lose
    victim = next(node for node in nodes(cluster) if node.node == victim_id)
    victim_pid = victim._read_pid()
    assert victim_pid is not None

    acked: list[bytes] = []
    failed = 0
    killed_at: float | None = None
    first_ack_after_kill: float | None = None
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", request_timeout_ms=10_000, retry_backoff_ms=200
    )
    await producer.start()
    try:
        for i in range(400):
            value = f"record-{i}".encode()
            if i == 150:
                os.kill(victim_pid, signal.SIGKILL)  # kill -9, mid-stream
                killed_at = time.monotonic()
            try:
                await asyncio.wait_for(producer.send_and_wait(topic, value, partition=i % 2), 30)
            except (KafkaError, TimeoutError):
                failed += 1  # not acknowledged: the client knows, and may retry
                continue
            acked.append(value)
            if killed_at is not None and first_ack_after_kill is None:
                first_ack_after_kill = time.monotonic()
    finally:
        await producer.stop()
    assert killed_at is not None and first_ack_after_kill is not None
    recovery_s = first_ack_after_kill - killed_at
    print(f"acked {len(acked)}/400, failed {failed}, first ack {recovery_s:.2f} s after kill -9 of node {victim_id}")
    assert len(acked) >= 390, f"the cluster stopped serving: {failed} produces failed"
    assert recovery_s < 30

    # Every acknowledged record is there, read from the two survivors.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen: set[bytes] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(position >= ends[tp] for position, tp in zip(positions, partitions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=1000)
            seen.update(record.value for records in batch.values() for record in records if record.value)
    finally:
        await consumer.stop()
    lost = [value for value in acked if value not in seen]
    assert lost == [], f"{len(lost)} acknowledged records lost"

    # The survivors lead every partition; the dead node is out of the in-sync set, and min.insync.replicas 2 holds.
    after = await replica_state(settings, topic)
    for leader, _replicas, isr in after.values():
        assert leader != victim_id and victim_id not in isr and len(isr) >= 2

    # The node comes back (same data dir, `ragstream up kafka` is idempotent) and rejoins every in-sync set.
    await asyncio.to_thread(cluster.up, ["kafka"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(sorted(isr) == [1, 2, 3] for _l, _r, isr in (await replica_state(settings, topic)).values()):
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError(f"node {victim_id} did not rejoin the in-sync replicas")


def test_two_nodes_are_refused(tmp_path: Path) -> None:
    """Two controller voters cannot lose one: a 2-node cluster would look redundant and is not."""
    with pytest.raises(ServiceError, match="1, or 3 or more"):
        Stack(isolated_settings(tmp_path, kafka_brokers=2))


async def test_a_secured_cluster_authenticates_on_every_node(tmp_path: Path) -> None:
    """SCRAM between the brokers, PLAIN to the controllers, ACLs from `up`: the bridge writes a request across the
    cluster, an anonymous client is refused by every node."""
    base = free_port_block(6)
    settings = isolated_settings(
        tmp_path,
        kafka_brokers=3,
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="admin",
        kafka_password="a-Secret0",
        kafka_users="bridge:b-Secret1",
    )
    stack = Stack(settings)
    try:
        await asyncio.to_thread(stack.up, ["kafka"])  # formats each node with the users, then topics and ACLs
        bridge = settings.with_changes(kafka_username="bridge", kafka_password="b-Secret1")
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", **client_options(bridge))
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic(Topic.QUERIES), b"asked")
        finally:
            await producer.stop()
        for node in nodes(stack):
            anonymous = AIOKafkaProducer(bootstrap_servers=node.address, request_timeout_ms=3000)
            try:
                with pytest.raises(KafkaConnectionError):
                    await anonymous.start()
            finally:
                await anonymous.stop()
    finally:
        await asyncio.to_thread(stack.down, ["kafka"])


async def test_the_worker_keeps_serving_through_kill_9_of_a_broker(cluster: Stack, tmp_path: Path) -> None:
    """`ragstream worker` (Faust: a consumer group, offsets on the replicated __consumer_offsets, acks=all) on the
    cluster: every input sent before, during and after kill -9 of the leader of its input partition is handled
    (each undecodable document becomes the worker's dead letter), with no restart of the worker."""
    settings = cluster.settings.with_changes(data_dir=str(tmp_path))
    (tmp_path / "worker").mkdir()
    documents, dead_letters = settings.topic(Topic.DOCUMENTS), settings.topic(Topic.DEAD_LETTERS)
    decoder: EventDecoder[DeadLetter] = EventDecoder(DeadLetter)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "streams", "worker", "--role", "ingest"),
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handled: set[tuple[int, int]] = set()
    reader = AIOKafkaConsumer(
        dead_letters, bootstrap_servers=settings.kafka_servers, group_id=None, auto_offset_reset="latest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", request_timeout_ms=10_000)
    sent: set[tuple[int, int]] = set()
    try:
        await reader.start()
        await reader.getmany(timeout_ms=500)  # positioned at the end before anything is sent
        await producer.start()

        async def send(i: int) -> None:
            # A client's own duty during a fail-over: a retriable error (the dead leader not ready) is sent again.
            deadline = time.monotonic() + 60
            while True:
                try:
                    metadata = await producer.send_and_wait(documents, b"\xc1 poison %d" % i, partition=0)
                    break
                except KafkaError as exc:
                    if not exc.retriable or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            sent.add((metadata.partition, metadata.offset))

        async def collect(until: float) -> None:
            while time.monotonic() < until and not sent <= handled:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    for record in records:
                        letter = decoder.decode(record.value or b"")
                        if letter.source_topic == documents:
                            handled.add((letter.partition, letter.offset))

        await send(0)
        await collect(time.monotonic() + 120)  # the worker joined its group and answers
        assert sent <= handled, log.read_text()[-3000:]
        victim_id = (await replica_state(settings, documents))[0][0]
        victim = next(node for node in nodes(cluster) if node.node == victim_id)
        victim_pid = victim._read_pid()
        assert victim_pid is not None
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for i in range(1, 21):
            await send(i)
            await asyncio.sleep(0.1)
        await collect(time.monotonic() + 120)
        recovered_s = time.monotonic() - killed_at
        print(f"worker: {len(sent)} inputs, {len(sent & handled)} handled, all within {recovered_s:.1f} s of the kill")
        assert sent <= handled, f"unhandled: {sorted(sent - handled)}\n{log.read_text()[-3000:]}"
        assert worker.returncode is None, "the worker stopped"
    finally:
        worker.terminate()  # by its PID, first: a client that fails to stop must not leave the worker running
        try:
            await asyncio.wait_for(worker.wait(), 30)
        except TimeoutError:
            worker.kill()
            await worker.wait()
        await producer.stop()
        await reader.stop()
        await asyncio.to_thread(cluster.up, ["kafka"])  # the killed node back, for whatever runs next
