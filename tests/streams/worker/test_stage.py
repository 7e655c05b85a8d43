"""The stage wrapper with an in-memory outbox: what a bad or failing input produces, without a broker.

Every case checks the records a worker would produce: a dead letter with its reason for a poisoned input, an error
event for the client whenever the input named one, and never silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from infra.settings import Settings
from schemas.codec import encode
from schemas.events import AnswerError, DeadLetter, QueryRequest, ReplyTo
from schemas.topics import Topic
from streams.worker.outbox import MemoryOutbox
from streams.worker.stage import Stage, StageContext, StageFailure

SETTINGS = Settings.from_env({})
DEAD = SETTINGS.topic(Topic.DEAD_LETTERS)
REPLIES = "ragstream.replies.test.v1"


@dataclass
class Record:
    """The fields of a consumed Kafka message the stage reads."""

    value: bytes
    key: bytes | None = b"k"
    topic: str = SETTINGS.topic(Topic.QUERIES)
    partition: int = 0
    offset: int = 7
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def request(question: str = "How do I sort a dict?", request_id: str = "r1") -> QueryRequest:
    return QueryRequest(request_id=request_id, tenant="acme", question=question, reply_to=ReplyTo(topic=REPLIES))


def make_stage(handler_error: Exception | None = None) -> tuple[Stage[QueryRequest], MemoryOutbox, list[str]]:
    outbox = MemoryOutbox(SETTINGS)
    handled: list[str] = []

    async def handler(event: QueryRequest, ctx: StageContext) -> None:
        if handler_error is not None:
            raise handler_error
        handled.append(event.request_id)

    return Stage("prepare", QueryRequest, handler, outbox), outbox, handled


def only(events: list[msgspec.Struct], kind: type[msgspec.Struct]) -> msgspec.Struct:
    assert len(events) == 1, events
    assert isinstance(events[0], kind)
    return events[0]


async def test_an_undecodable_input_becomes_a_dead_letter_with_its_reason_and_the_next_one_is_handled() -> None:
    stage, outbox, handled = make_stage()
    await stage.process(Record(value=b"\xc1 not msgpack"))
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "DecodeError" and "undecodable event" in letter.reason
    assert (letter.source_topic, letter.partition, letter.offset, letter.stage) == (Record(b"").topic, 0, 7, "prepare")
    assert letter.value == b"\xc1 not msgpack" and not letter.value_masked
    assert outbox.on(REPLIES) == []  # no client could be named
    await stage.process(Record(value=encode(request(request_id="r2"))))
    assert handled == ["r2"] and (stage.processed, stage.failed) == (1, 1)


async def test_a_readable_request_of_the_wrong_shape_still_answers_its_client() -> None:
    stage, outbox, _ = make_stage()
    shape = {"kind": "query.request", "request_id": "r9", "reply_to": {"topic": REPLIES}, "question": 42}
    await stage.process(Record(value=msgspec.msgpack.encode(shape)))
    error = only(outbox.on(REPLIES), AnswerError)
    assert isinstance(error, AnswerError)
    assert (error.request_id, error.code, error.stage) == ("r9", "stage_failed", "prepare")
    only(outbox.on(DEAD), DeadLetter)


async def test_a_failing_handler_answers_the_client_and_writes_a_dead_letter() -> None:
    stage, outbox, _ = make_stage(RuntimeError("reranker exploded"))
    await stage.process(Record(value=encode(request())))
    error = only(outbox.on(REPLIES), AnswerError)
    assert isinstance(error, AnswerError)
    assert (error.code, error.message, error.stage) == ("stage_failed", "prepare failed: RuntimeError", "prepare")
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "RuntimeError" and letter.reason == "reranker exploded"
    reply_record = next(r for r in outbox.sent if r.topic == REPLIES)
    assert reply_record.key == b"r1" and reply_record.headers["ragstream-kind"] == b"answer.error"


async def test_a_dead_letter_never_carries_raw_pii() -> None:
    question = "My card is 4111 1111 1111 1111, mail jane.roe@example.com"
    stage, outbox, _ = make_stage(ValueError(f"cannot handle {question}"))
    await stage.process(Record(value=encode(request(question))))
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter)
    assert letter.value_masked
    for raw in (b"4111 1111 1111 1111", b"jane.roe@example.com"):
        assert raw not in letter.value
    assert "jane.roe@example.com" not in letter.reason and "<EMAIL_ADDRESS>" in letter.reason
    assert msgspec.msgpack.decode(letter.value)["request_id"] == "r1"  # still a readable event


async def test_a_stage_failure_is_an_answer_to_the_client_not_a_dead_letter() -> None:
    stage, outbox, _ = make_stage(StageFailure("unknown_prompt", "prompt rag_qa has no version '9'"))
    await stage.process(Record(value=encode(request())))
    error = only(outbox.on(REPLIES), AnswerError)
    assert isinstance(error, AnswerError)
    assert (error.code, error.message) == ("unknown_prompt", "prompt rag_qa has no version '9'")
    assert outbox.on(DEAD) == []


@pytest.mark.parametrize("failing", [REPLIES, DEAD])
async def test_a_failed_produce_does_not_stop_the_stage(failing: str) -> None:
    stage, outbox, _ = make_stage(RuntimeError("boom"))
    outbox.fail_topics.add(failing)
    await stage.process(Record(value=encode(request())))  # does not raise: the agent's loop goes on
    other = DEAD if failing == REPLIES else REPLIES
    assert len(outbox.on(other)) == 1  # the other record still went out
    outbox.fail_topics.clear()
    await stage.process(Record(value=encode(request(request_id="r2")), offset=8))
    assert len(outbox.on(REPLIES)) == (2 if failing == DEAD else 1)


def nested(depth: int) -> bytes:
    """A query request whose unknown field is nested ``depth`` arrays deep (about 100 KB): decoders recurse on it
    even to skip it."""
    head = msgspec.msgpack.encode({"kind": "query.request", "request_id": "r9", "x": None})
    return head[:-1] + b"\x91" * depth + b"\xc0"


async def test_a_deeply_nested_input_is_a_dead_letter_not_a_crash() -> None:
    stage, outbox, handled = make_stage()
    await stage.process(Record(value=nested(100_000)))
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter) and letter.error_type == "DecodeError" and "nested" in letter.reason
    await stage.process(Record(value=encode(request(request_id="r2"))))
    assert handled == ["r2"]


async def test_an_input_too_large_for_a_dead_letter_is_kept_in_part_with_its_size_and_hash() -> None:
    stage, outbox, _ = make_stage(RuntimeError("too big to handle"))
    big = encode(request("x " * 600_000))  # about 1.2 MB: more than a Kafka message may hold
    await stage.process(Record(value=big))
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter)
    assert len(letter.value) == 512 * 1024 and big.startswith(letter.value)
    assert f"of {len(big)} bytes; sha256 " in letter.reason
    assert len(encode(letter)) < 1_000_000
    only(outbox.on(REPLIES), AnswerError)  # the client still hears why


async def test_a_request_id_no_client_would_send_gets_no_reply_but_a_dead_letter() -> None:
    stage, outbox, _ = make_stage(RuntimeError("boom"))
    await stage.process(Record(value=encode(request(request_id="r" * 100_000))))
    assert outbox.on(REPLIES) == []
    letter = only(outbox.on(DEAD), DeadLetter)
    assert isinstance(letter, DeadLetter) and "no error reply: request_id of 100000 characters" in letter.reason
