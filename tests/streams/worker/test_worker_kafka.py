"""The Faust worker on real Kafka: round trips, dead letters, error replies, and a broker restart without loss."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from infra.kafka_admin import ensure_topics
from infra.settings import Settings
from infra.stack import Stack
from schemas.codec import EventDecoder, encode
from schemas.events import (
    AnswerDone,
    AnswerError,
    DeadLetter,
    QueryOptions,
    QueryRequest,
    ReplyTo,
    TokenDelta,
    new_id,
)
from schemas.topics import Topic
from streams.clients.asker import KafkaAsker
from streams.kafka import follow_from_end
from streams.worker.replies import ReplyAddresses
from tests.conftest import QUESTION, WorkerProcess


async def _answer(asker: KafkaAsker, request_id: str, timeout_s: float = 30.0) -> tuple[str, AnswerDone | AnswerError]:
    text = []
    seqs = []
    async for event in asker.events(request_id, timeout_s=timeout_s):
        if isinstance(event, TokenDelta):
            text.append(event.text)
            seqs.append(event.seq)
        else:
            assert seqs == list(range(len(seqs))), "deltas out of order or with gaps"
            return "".join(text), event
    raise AssertionError("stream ended without done/error")


async def test_a_request_streams_back_through_kafka_and_triton_with_its_token_counts(
    corpus: dict[str, Path], tenants: tuple[str, str], stack_settings: Settings
) -> None:
    async with KafkaAsker(stack_settings) as asker:
        options = QueryOptions(model="llm_echo", max_tokens=400, use_cache=False)
        request_id = await asker.send(QUESTION, tenant=tenants[0], options=options)
        text, done = await _answer(asker, request_id)
    assert isinstance(done, AnswerDone)
    assert text == done.text and QUESTION in text  # llm_echo streams back the prompt built around the question
    assert 1 < done.deltas < done.usage.completion_tokens  # batched: fewer Kafka events than tokens, but streamed
    # The model's count of the whole prompt: the question, the instructions and the passages around it.
    assert done.usage.prompt_tokens > len(QUESTION.split()) + 20
    assert "ttft_model" in done.timings_ms


async def _dead_letters_after(
    settings: Settings, start_offset: int, count: int, timeout_s: float = 30.0
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(settings.topic(Topic.DEAD_LETTERS), 0)
    consumer.assign([tp])
    consumer.seek(tp, start_offset)
    decoder = EventDecoder(DeadLetter)
    letters: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(letters) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500)
            letters.extend(decoder.decode(record.value) for record in batch.get(tp, []))
    finally:
        await consumer.stop()
    return letters


async def _end_offset(settings: Settings, key: Topic) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(key), 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_malformed_events_become_dead_letters_and_the_worker_keeps_going(
    worker: WorkerProcess, stack_settings: Settings
) -> None:
    start = await _end_offset(stack_settings, Topic.DEAD_LETTERS)
    garbage = b"\xc1\x00 not msgpack"
    # No request_id: undecodable as a request. It carries PII, which must not reach the dead-letter topic.
    wrong_shape = msgspec.msgpack.encode(
        {"kind": "query.request", "tenant": "t", "question": "mail jane.roe@example.com, card 4111 1111 1111 1111"}
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers)
    await producer.start()
    try:
        await producer.send_and_wait(stack_settings.topic(Topic.QUERIES), garbage, key=b"bad-1")
        await producer.send_and_wait(stack_settings.topic(Topic.QUERIES), wrong_shape, key=b"bad-2")
    finally:
        await producer.stop()

    letters = await _dead_letters_after(stack_settings, start, 2)
    by_key = {letter.key: letter for letter in letters}
    assert set(by_key) >= {b"bad-1", b"bad-2"}
    assert by_key[b"bad-1"].value == garbage and by_key[b"bad-1"].error_type == "DecodeError"
    assert "missing required field" in by_key[b"bad-2"].reason
    assert by_key[b"bad-2"].value_masked
    assert b"jane.roe@example.com" not in by_key[b"bad-2"].value and b"4111" not in by_key[b"bad-2"].value
    assert b"<EMAIL_ADDRESS>" in by_key[b"bad-2"].value
    assert by_key[b"bad-1"].source_topic == stack_settings.topic(Topic.QUERIES)

    async with KafkaAsker(stack_settings) as asker:  # still serving
        request_id = await asker.send("still alive?", options=QueryOptions(model="llm_echo"))
        text, done = await _answer(asker, request_id)
    assert worker.alive()
    assert isinstance(done, AnswerDone) and text == done.text


async def test_requests_naming_missing_or_foreign_reply_topics_are_dead_letters_and_never_stall_the_worker(
    worker: WorkerProcess, stack_settings: Settings
) -> None:
    start = await _end_offset(stack_settings, Topic.DEAD_LETTERS)
    prefix = stack_settings.topic_prefix
    bad = {
        b"ghost": ReplyTo(topic=f"{prefix}.replies.ghost{time.time_ns()}.v1"),  # a reply topic nobody created
        b"foreign": ReplyTo(topic=stack_settings.topic(Topic.DOCUMENTS)),  # exists, but is not a reply topic
        b"partition": ReplyTo(topic=stack_settings.reply_topic, partition=99),
    }
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers, acks="all")
    await producer.start()
    try:
        for _ in range(3):  # more than one round: each must be refused fast, not wait out a producer timeout
            for key, reply_to in bad.items():
                request = QueryRequest(request_id=key.decode(), tenant="t", question="q?", reply_to=reply_to)
                await producer.send_and_wait(stack_settings.topic(Topic.QUERIES), encode(request), key=key)
    finally:
        await producer.stop()
    started = time.monotonic()
    async with KafkaAsker(stack_settings) as asker:  # served at once, although 9 bad requests came first
        request_id = await asker.send("still answering?", options=QueryOptions(model="llm_echo", use_cache=False))
        _, done = await _answer(asker, request_id)
    assert isinstance(done, AnswerDone) and time.monotonic() - started < 30
    letters = await _dead_letters_after(stack_settings, start, 9)
    reasons = {letter.key: letter.reason for letter in letters}
    assert "does not exist" in reasons[b"ghost"]
    assert "is not a reply topic" in reasons[b"foreign"]
    assert "has no partition 99" in reasons[b"partition"]
    assert {letter.error_type for letter in letters} == {"InvalidReplyAddress"}


async def test_a_reply_topic_created_while_its_address_is_checked_is_accepted(stack_settings: Settings) -> None:
    """A bridge asks the moment its reply topic exists; the worker's metadata may not show it yet. The check looks
    again for a moment instead of refusing a live bridge's first requests, and still refuses a topic that never
    appears."""
    replies = ReplyAddresses(stack_settings, confirm_s=3.0)
    topic = stack_settings.bridge_reply_topic(f"late{new_id()[:8]}")
    try:

        async def create_soon() -> None:
            await asyncio.sleep(0.5)
            new = NewTopic(name=topic, num_partitions=2, replication_factor=1)
            await ensure_topics(stack_settings, (), extra=[new])

        creating = asyncio.create_task(create_soon())
        # ten requests at once, as a bridge's first clients send them: none is refused
        problems = await asyncio.gather(*(replies.problem(ReplyTo(topic=topic, partition=1)) for _ in range(10)))
        assert problems == [None] * 10
        await creating
        never = stack_settings.bridge_reply_topic(f"never{new_id()[:8]}")
        started = time.monotonic()
        problem = await replies.problem(ReplyTo(topic=never))
        assert problem is not None and "does not exist" in problem
        assert time.monotonic() - started < 5.0
        started = time.monotonic()
        assert await replies.problem(ReplyTo(topic=never)) is not None  # refused again without waiting
        assert time.monotonic() - started < 0.5
    finally:
        await replies.close()


async def test_a_failing_model_answers_the_client_with_an_error_event(
    corpus: dict[str, Path], tenants: tuple[str, str], stack_settings: Settings
) -> None:
    start = await _end_offset(stack_settings, Topic.DEAD_LETTERS)
    async with KafkaAsker(stack_settings) as asker:
        options = QueryOptions(model="model_that_does_not_exist", use_cache=False)
        request_id = await asker.send(QUESTION, tenant=tenants[0], options=options)
        _, outcome = await _answer(asker, request_id)
    assert isinstance(outcome, AnswerError)
    assert outcome.stage == "generate" and outcome.code == "stage_failed"
    letters = await _dead_letters_after(stack_settings, start, 1)
    assert letters and letters[0].key == request_id.encode()


async def test_a_broker_restart_loses_no_committed_request(
    worker: WorkerProcess, stack: Stack, stack_settings: Settings
) -> None:
    reply_topic = stack_settings.topic(Topic.ANSWERS)
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers, acks="all")
    await producer.start()

    async def send(batch: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            request = QueryRequest(
                request_id=f"{batch}-{i}-{time.time_ns()}",
                tenant="t",
                question=f"What is the frobnicator timeout, case {i} of the {batch} set?",
                reply_to=ReplyTo(topic=reply_topic),
                options=QueryOptions(model="llm_echo"),
            )
            await producer.send_and_wait(
                stack_settings.topic(Topic.QUERIES), encode(request), key=request.request_id.encode()
            )
            ids.append(request.request_id)
        return ids

    consumer = AIOKafkaConsumer(bootstrap_servers=stack_settings.kafka_servers, enable_auto_commit=False)
    await consumer.start()
    await follow_from_end(consumer, reply_topic)

    before = await send("before", 10)
    await producer.stop()  # acknowledged by the broker: these must survive the restart

    kafka = stack.services["kafka"]
    kafka.stop()
    kafka.start()

    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers, acks="all")
    await producer.start()
    after = await send("after", 10)
    await producer.stop()

    done: set[str] = set()
    errors: dict[str, str] = {}
    decoder = EventDecoder(AnswerDone | AnswerError | TokenDelta)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not set(before + after) <= done:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = decoder.decode(record.value)
                    if isinstance(event, AnswerDone):
                        done.add(event.request_id)
                    elif isinstance(event, AnswerError):
                        errors[event.request_id] = f"{event.stage}: {event.message}"
    finally:
        await consumer.stop()
    missing = set(before + after) - done
    summary = sorted({m.split("-")[0] + ": " + errors.get(m, "no answer") for m in missing})
    assert not missing, f"{len(missing)} requests lost across the broker restart: {summary}\n{worker.log()[-1500:]}"
    assert worker.alive()
