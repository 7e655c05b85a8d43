"""The Kafka prompt store on the real stack: shared state across instances, live promotions, restart, compaction."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from infra.kafka_admin import delete_topics, ensure_topics
from infra.settings import Settings
from infra.stack import Stack
from processors.prompts.registry import PromptError, builtin_templates, content_hash
from schemas.topics import Topic
from streams.clients.prompt_store import KafkaPromptStore

PROPAGATION_DEADLINE_S = 2.0


def _name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def _snapshot(store: KafkaPromptStore) -> dict[str, object]:
    state = store.state
    return {name: (state.versions(name), state.history(name)) for name in state.names()}


async def _until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``predicate`` held; fails the test at the deadline."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _end_offset(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


@pytest.fixture
async def private_topic(stack: Stack, stack_settings: Settings) -> AsyncIterator[str]:
    """A fresh compacted registry topic, so built-in installation and compaction are observed from empty."""
    name = f"{stack_settings.topic_prefix}.prompts-test-{uuid.uuid4().hex[:8]}"
    config = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "segment.ms": "200",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    await ensure_topics(stack_settings, [], extra=[NewTopic(name, 1, 1, topic_configs=config)])
    yield name
    await delete_topics(stack_settings, [name])


async def test_builtins_are_installed_once_as_active_version_1(stack_settings: Settings, private_topic: str) -> None:
    async with KafkaPromptStore(stack_settings, topic=private_topic) as first:
        shipped = builtin_templates()
        for name, spec in shipped.items():
            active = first.active(name)
            assert active.version == "1"
            assert active.content_hash == content_hash(spec.template)
        written = await _end_offset(stack_settings, private_topic)
        assert written == 2 * len(shipped)  # one version record and one pointer record each
    async with KafkaPromptStore(stack_settings, topic=private_topic) as second:
        assert _snapshot(second) == _snapshot(first)
    assert await _end_offset(stack_settings, private_topic) == written  # present: not registered again


async def test_a_registration_is_seen_by_another_instance_and_identical_text_is_deduped(
    stack: Stack, stack_settings: Settings
) -> None:
    name = _name()
    async with KafkaPromptStore(stack_settings) as writer, KafkaPromptStore(stack_settings) as reader:
        template, created = await writer.register(name, "Answer {{question}} from {{sources}}", description="d")
        assert created
        assert template.version == "1"
        assert writer.topic == stack_settings.topic(Topic.PROMPTS)
        await _until(lambda: reader.state.get(name, "1") is not None, PROPAGATION_DEADLINE_S)
        assert reader.state.get(name, "1") == template
        before = await _end_offset(stack_settings, writer.topic)
        again, created_again = await reader.register(name, "Answer {{question}} from {{sources}}")
        assert not created_again
        assert again == template
        assert await _end_offset(stack_settings, writer.topic) == before  # nothing written
        second, _ = await reader.register(name, "Answer {{question}} using only {{sources}}")
        assert second.version == "2"


async def test_promotion_and_rollback_reach_a_running_instance_within_the_deadline(
    stack: Stack, stack_settings: Settings
) -> None:
    name = _name()
    async with KafkaPromptStore(stack_settings) as operator, KafkaPromptStore(stack_settings) as worker:
        for i in range(3):
            await operator.register(name, f"v{i} {{{{question}}}}", promote=(i == 0))
        await _until(lambda: worker.state.active_version(name) == "1", PROPAGATION_DEADLINE_S)
        with pytest.raises(PromptError, match="has no active version"):
            worker.active(_name())
        delays = []
        for version in ("3", "2"):
            await operator.promote(name, version)
            delays.append(
                await _until(lambda v=version: worker.state.active_version(name) == v, PROPAGATION_DEADLINE_S)
            )
        rolled = await operator.rollback(name)
        assert rolled.version == "3"
        delays.append(await _until(lambda: worker.state.active_version(name) == "3", PROPAGATION_DEADLINE_S))
        assert worker.active(name).ref == rolled.ref
        assert worker.state.history(name) == ["1", "3"]
        assert max(delays) < 1.5, delays


async def test_a_restarted_store_reads_the_same_state(stack: Stack, stack_settings: Settings) -> None:
    name = _name()
    async with KafkaPromptStore(stack_settings) as store:
        for i in range(4):
            await store.register(name, f"text {i}: {{{{question}}}}", promote=True)
        await store.rollback(name)
        await store.promote(name, "1")
        before = _snapshot(store)
        active = store.active(name)
    async with KafkaPromptStore(stack_settings) as restarted:
        assert _snapshot(restarted) == before
        assert restarted.active(name) == active
        assert restarted.state.history(name) == ["1", "2", "3", "1"]
        assert (await restarted.rollback(name)).version == "3"


async def _records_on(settings: Settings, topic: str) -> list[tuple[int, bytes | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = int((await consumer.end_offsets([tp]))[tp])
        out: list[tuple[int, bytes | None]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            out.extend((record.offset, record.key) for record in batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


async def test_state_survives_real_log_compaction(stack_settings: Settings, private_topic: str) -> None:
    name = _name()
    async with KafkaPromptStore(stack_settings, topic=private_topic, install_builtins=False) as store:
        for i in range(3):
            await store.register(name, f"{i} {{{{question}}}}")
        for version in ("1", "2", "3", "2", "1"):
            await store.promote(name, version)
        await store.rollback(name)
        before = _snapshot(store)
    # Offsets are never reused, so the end offset counts what was written even if the cleaner has already run.
    written = await _end_offset(stack_settings, private_topic)
    # Roll segments so the cleaner may compact them: a record appended after segment.ms closes the active one.
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers, acks="all")
    await producer.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            await asyncio.sleep(0.5)
            await producer.send_and_wait(private_topic, None, key=b"filler", partition=0)  # a tombstone
            remaining = await _records_on(stack_settings, private_topic)
            pointer_records = [offset for offset, key in remaining if key == name.encode()]
            if len(pointer_records) == 1:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the log cleaner did not compact {private_topic} in 90s: {remaining}")
    finally:
        await producer.stop()
    assert written == 3 + 6  # three versions, then five promotions and a rollback of the one pointer key
    assert {key for _, key in remaining} >= {f"{name}@{v}".encode() for v in ("1", "2", "3")}
    async with KafkaPromptStore(stack_settings, topic=private_topic, install_builtins=False) as replayed:
        assert _snapshot(replayed) == before
        assert replayed.state.history(name) == ["1", "2", "3", "2"]
        assert (await replayed.rollback(name)).version == "3"


def test_the_cli_registers_shows_promotes_and_rolls_back(
    stack: Stack, stack_settings: Settings, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from streams.cli.app import cli
    from tests.conftest import settings_env

    runner, env, name = CliRunner(), settings_env(stack_settings), _name()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["prompts", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("description: first\nvariables: question\n---\nQ: {{question}}\n")
    second.write_text("A: {{question}} {{sources}}\n")
    assert f"registered {name}@1" in run("register", name, str(first), "--promote")
    assert f"registered {name}@2" in run("register", name, str(second))
    assert f"identical to {name}@1" in run("register", name, str(first))
    shown = run("show", name)
    assert "version:     1  (active)" in shown
    assert shown.endswith("Q: {{question}}\n")
    assert content_hash("A: {{question}} {{sources}}\n") in run("show", name, "--version", "2")
    assert "active version 2" in run("promote", name, "2")
    listed = [line.split() for line in run("list").splitlines()]
    assert [name, "2", "2"] in [row[:3] for row in listed]
    assert "rolled back to version 1" in run("rollback", name)
    failed = runner.invoke(cli, ["prompts", "rollback", name], env=env)
    assert failed.exit_code == 1
    assert "no previously active version" in failed.output
