"""Kafka security against the real broker: a local KRaft broker started by the project with SASL/SCRAM and ACLs
(infra/services/kafka.py, infra/kafka_security.py) refuses unauthenticated clients and lets each role do only its
own work; in particular nobody but the bridge and trusted roles can write requests, and only the worker can write
replies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from infra.kafka_admin import ensure_topics
from infra.kafka_security import acl_bindings, apply_acls, client_options, parse_users
from infra.services._process import ServiceError
from infra.services.kafka import Kafka
from infra.settings import Settings
from schemas.topics import Topic
from streams.bridge.server import Bridge
from streams.clients.asker import KafkaAsker
from streams.clients.ingest import DocumentChannel
from streams.worker.app import broker_credentials
from tests.conftest import isolated_settings, settings_env

pytestmark = pytest.mark.services

PASSWORDS = {
    "bridge": "b-Secret1",
    "worker": "w-Secret2",
    "ingest": "i-Secret3",
    "operator": "o-Secret4",
    "monitor": "m-Secret6",
}
# A real SCRAM user with no ACL at all: authenticated, yet allowed nothing.
STRANGER = ("stranger", "s-Secret5")
INSTANCE = "bridge-a"


def as_user(settings: Settings, user: str, password: str | None = None) -> Settings:
    return settings.with_changes(kafka_username=user, kafka_password=password or PASSWORDS[user])


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A secured broker on free ports in its own data dir, its topics and ACLs created by the admin."""
    users = ",".join(f"{user}:{password}" for user, password in [*PASSWORDS.items(), STRANGER])
    settings = isolated_settings(
        tmp_path_factory.mktemp("kafka-secured"),
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="admin",
        kafka_password="a-Secret0",
        kafka_users=users,
    )
    kafka = Kafka(settings)
    try:
        kafka.start()
        asyncio.run(ensure_topics(settings))
        asyncio.run(apply_acls(settings))
        yield settings
    finally:
        kafka.stop()  # by the PID it wrote


@pytest.fixture
async def reply_topic(admin: Settings) -> AsyncIterator[str]:
    """A bridge's reply topic, created the way a bridge creates it at start: as the bridge user."""
    name = admin.bridge_reply_topic(INSTANCE)
    await ensure_topics(as_user(admin, "bridge"), [], extra=[NewTopic(name, 1, 1)])
    yield name


async def produce(settings: Settings, topic: str, value: bytes = b"x") -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", request_timeout_ms=5000, **client_options(settings)
    )
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(topic, value), 20)
    finally:
        await producer.stop()


async def partition_ids(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    cluster = await consumer._client.fetch_all_metadata()
    return cluster.partitions_for_topic(topic) or set()


async def end_offset(admin: Settings, topic: str) -> int:
    """Records ever written to ``topic`` (all partitions), read as the admin."""
    consumer = AIOKafkaConsumer(bootstrap_servers=admin.kafka_servers, group_id=None, **client_options(admin))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await partition_ids(consumer, topic))]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_unauthenticated_client_cannot_produce_to_request_or_reply_topics(
    admin: Settings, reply_topic: str
) -> None:
    anonymous = admin.with_changes(kafka_security_protocol="PLAINTEXT", kafka_username="", kafka_password="")
    request_topic = admin.topic(Topic.QUERIES)
    for topic in (request_topic, reply_topic, admin.topic(Topic.ANSWERS)):
        before = await end_offset(admin, topic)
        with pytest.raises(KafkaConnectionError):
            await produce(anonymous, topic)
        assert await end_offset(admin, topic) == before, f"an unauthenticated record reached {topic}"


async def test_wrong_password_and_unknown_user_are_refused(admin: Settings, reply_topic: str) -> None:
    request_topic = admin.topic(Topic.QUERIES)
    before = await end_offset(admin, request_topic)
    for user, password in (("bridge", "not-the-password"), ("mallory", "b-Secret1"), ("admin", "guess")):
        with pytest.raises(KafkaError):
            await produce(as_user(admin, user, password), request_topic)
        with pytest.raises(KafkaError):
            await produce(as_user(admin, user, password), reply_topic)
    assert await end_offset(admin, request_topic) == before


async def test_only_the_bridge_and_trusted_roles_write_requests(admin: Settings) -> None:
    queries = admin.topic(Topic.QUERIES)
    before = await end_offset(admin, queries)
    await produce(as_user(admin, "bridge"), queries, b"from-bridge")
    await produce(as_user(admin, "operator"), queries, b"from-operator")
    denied_users = [as_user(admin, user) for user in ("worker", "ingest", "monitor")] + [as_user(admin, *STRANGER)]
    for denied in denied_users:
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(denied, queries, b"forged")
    assert await end_offset(admin, queries) == before + 2


async def test_only_the_worker_writes_replies(admin: Settings, reply_topic: str) -> None:
    answers = admin.topic(Topic.ANSWERS)
    before = {topic: await end_offset(admin, topic) for topic in (reply_topic, answers)}
    await produce(as_user(admin, "worker"), reply_topic, b"answer")
    await produce(as_user(admin, "worker"), answers, b"answer")
    for user in ("bridge", "ingest", "operator", "monitor"):
        for topic in (reply_topic, answers):
            with pytest.raises(TopicAuthorizationFailedError):
                await produce(as_user(admin, user), topic, b"forged answer")
    for topic in (reply_topic, answers):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(as_user(admin, *STRANGER), topic, b"forged answer")
    assert await end_offset(admin, reply_topic) == before[reply_topic] + 1
    assert await end_offset(admin, answers) == before[answers] + 1


async def test_roles_read_what_they_need_and_nothing_else(admin: Settings, reply_topic: str) -> None:
    queries = admin.topic(Topic.QUERIES)
    await produce(as_user(admin, "bridge"), queries, b"q")
    await produce(as_user(admin, "worker"), reply_topic, b"r")

    async def first_value(settings: Settings, topic: str, group: str | None) -> bytes | None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **client_options(settings),
        )
        try:
            await consumer.start()
            record = await asyncio.wait_for(consumer.getone(), 30)
            return record.value
        finally:
            await consumer.stop()

    # The worker reads requests in its consumer group; the bridge reads its reply topic.
    assert await first_value(as_user(admin, "worker"), queries, admin.app_id) is not None
    assert await first_value(as_user(admin, "bridge"), reply_topic, None) is not None
    # The bridge cannot read requests (other tenants' questions), nor the worker's group.
    with pytest.raises(TopicAuthorizationFailedError):
        await first_value(as_user(admin, "bridge"), queries, None)
    with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
        await first_value(as_user(admin, "ingest"), admin.topic(Topic.DOCUMENT_ACKS), admin.app_id)


async def test_only_the_bridge_creates_reply_topics(admin: Settings) -> None:
    name = admin.bridge_reply_topic("bridge-b")
    with pytest.raises(KafkaError):
        await ensure_topics(as_user(admin, "ingest"), [], extra=[NewTopic(name, 1, 1)])
    assert await ensure_topics(as_user(admin, "bridge"), [], extra=[NewTopic(name, 1, 1)]) == [name]


def test_acls_name_every_role_and_never_let_the_bridge_write_replies(admin: Settings) -> None:
    bindings = acl_bindings(admin)
    assert {binding.user for binding in bindings} == set(PASSWORDS)
    replies = f"{admin.topic_prefix}.replies."
    writers = {b.user for b in bindings if b.operation.name == "WRITE" and b.name in (replies, admin.reply_topic)}
    assert writers == {"worker"}


def test_unsafe_credentials_and_a_changed_security_mode_are_refused(admin: Settings, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="user:password"):
        parse_users("bridge:pa,ss")  # the comma splits it: "ss" has no password
    with pytest.raises(ValueError, match="cannot contain"):
        parse_users('bridge:pa"ss')
    with pytest.raises(ValueError, match="RAGSTREAM_KAFKA_USERNAME"):
        client_options(admin.with_changes(kafka_password=""))
    # The same data dir, now asked to run without security: refused instead of silently opening the broker.
    with pytest.raises(ServiceError, match="formatted for SASL_PLAINTEXT"):
        Kafka(admin.with_changes(kafka_security_protocol="PLAINTEXT")).format_storage()


async def test_project_clients_connect_with_their_role(admin: Settings) -> None:
    """The clients' own code paths take the credentials from settings: the asker (operator), the document channel
    (ingest), the Faust worker's broker credentials (worker)."""
    queries, documents, stages = (admin.topic(t) for t in (Topic.QUERIES, Topic.DOCUMENTS, Topic.QUERY_STAGES))
    before = {topic: await end_offset(admin, topic) for topic in (queries, documents, stages)}
    async with KafkaAsker(as_user(admin, "operator")) as asker:
        await asker.producer.send_and_wait(queries, b"asked by an operator")
    async with DocumentChannel(as_user(admin, "ingest")) as channel:
        await channel.producer.send_and_wait(documents, b"a document")
        with pytest.raises(TopicAuthorizationFailedError):
            await channel.producer.send_and_wait(queries, b"ingest asking")
    faust_auth = credentials_to_aiokafka_auth(broker_credentials(as_user(admin, "worker")))
    assert faust_auth["sasl_mechanism"] == "SCRAM-SHA-512"
    producer = AIOKafkaProducer(bootstrap_servers=admin.kafka_servers, acks="all", **faust_auth)
    await producer.start()
    try:
        await producer.send_and_wait(stages, b"a stage")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(queries, b"worker asking")
    finally:
        await producer.stop()
    after = {topic: await end_offset(admin, topic) for topic in (queries, documents, stages)}
    assert after == {topic: count + 1 for topic, count in before.items()}


def test_kafka_setup_command_is_idempotent(admin: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "kafka-setup"],
        env=settings_env(admin),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "topics created: 0" in result.stdout
    assert f"ACL bindings applied: {len(acl_bindings(admin))}" in result.stdout


async def test_the_bridge_starts_as_the_bridge_user(admin: Settings) -> None:
    """The bridge's own start: it checks the topics, creates its reply topic, replays it and serves."""
    bridge = Bridge(as_user(admin, "bridge").with_changes(bridge_port=0, bridge_metrics_port=0), instance="bridge-c")
    await bridge.start()
    try:
        assert bridge.serving
        assert await end_offset(admin, admin.bridge_reply_topic("bridge-c")) == 0  # created, by the bridge
    finally:
        await bridge.stop()


async def test_the_worker_process_consumes_and_produces_as_the_worker_user(admin: Settings, tmp_path: Path) -> None:
    """`ragstream worker` (Faust) with the worker's credentials joins its consumer group and writes: an undecodable
    document that the ingest user sends comes back as the worker's dead letter."""
    worker = as_user(admin, "worker").with_changes(data_dir=str(tmp_path))
    (tmp_path / "worker").mkdir()
    dead_letters = admin.topic(Topic.DEAD_LETTERS)
    before = await end_offset(admin, dead_letters)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "streams", "worker", "--role", "ingest"),
            env=settings_env(worker),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await produce(as_user(admin, "ingest"), admin.topic(Topic.DOCUMENTS), b"\xc1 not msgpack")
        deadline = asyncio.get_running_loop().time() + 120
        while await end_offset(admin, dead_letters) == before:
            assert proc.returncode is None, log.read_text()[-3000:]
            assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(1)
    finally:
        proc.terminate()  # by its PID
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert "AuthorizationFailed" not in log.read_text()
