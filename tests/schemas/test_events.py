"""The wire format: round trips, forward compatibility, and what other services can produce."""

from __future__ import annotations

import msgspec
import pytest

from schemas.codec import DecodeError, EventDecoder, any_event_decoder, encode
from schemas.events import (
    SCHEMA_VERSION,
    AnswerDone,
    AnswerEvent,
    AnyEvent,
    Chunk,
    Citation,
    DeadLetter,
    DocumentDelete,
    DocumentEvent,
    DocumentUpsert,
    PromptRef,
    QueryRequest,
    ReplyTo,
    TokenDelta,
)


def _request() -> QueryRequest:
    return QueryRequest(request_id="r1", tenant="acme", question="What is a list?", reply_to=ReplyTo(topic="t"))


SAMPLES: list[msgspec.Struct] = [
    DocumentUpsert(tenant="acme", doc_id="d1", version=3, content="text", metadata={"lang": "en", "pages": 2}),
    DocumentDelete(tenant="acme", doc_id="d1"),
    Chunk(chunk_id="c", tenant="acme", doc_id="d1", version=3, index=0, text="t", heading_path=["A", "B"]),
    _request(),
    TokenDelta(request_id="r1", seq=0, text="Hel", tokens=1),
    AnswerDone(
        request_id="r1",
        text="Hello [1]",
        citations=[Citation(number=1, chunk_id="c", doc_id="d1")],
        prompt_ref=PromptRef(name="rag_qa", version="1", content_hash="abc"),
    ),
    DeadLetter(source_topic="t", partition=0, offset=5, stage="s", error_type="E", reason="r", value=b"\x00\xff"),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_the_union_decoder(event: msgspec.Struct) -> None:
    decoded = any_event_decoder.decode(encode(event))
    assert decoded == event
    assert type(decoded) is type(event)


def test_events_carry_kind_and_schema_version_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(encode(_request()))
    assert raw["kind"] == "query.request"
    assert raw["schema_version"] == SCHEMA_VERSION


def test_a_plain_msgpack_map_from_another_service_decodes() -> None:
    """Producers in other services need only a msgpack library: a map with ``kind`` and the fields."""
    foreign = msgspec.msgpack.encode(
        {
            "kind": "query.request",
            "request_id": "x",
            "tenant": "t",
            "question": "q",
            "reply_to": {"topic": "r"},
        }
    )
    event = EventDecoder(QueryRequest).decode(foreign)
    assert event.request_id == "x"
    assert event.options.use_cache is True  # defaults fill what the producer left out


def test_newer_producers_with_unknown_fields_still_decode() -> None:
    raw = msgspec.msgpack.decode(encode(_request()))
    raw["schema_version"] = SCHEMA_VERSION + 1
    raw["priority"] = "high"
    raw["reply_to"]["format"] = "sse"
    event = EventDecoder(QueryRequest).decode(msgspec.msgpack.encode(raw))
    assert event.question == "What is a list?"
    assert event.schema_version == SCHEMA_VERSION + 1


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x01garbage", "malformed|truncated|Expected"),
        (msgspec.msgpack.encode({"kind": "query.request", "tenant": "t"}), "missing required field"),
        (msgspec.msgpack.encode({"kind": "no.such.kind"}), "Invalid value 'no.such.kind'"),
        (
            msgspec.msgpack.encode({"kind": "answer.delta", "request_id": "r", "seq": "x", "text": ""}),
            "Expected `int`",
        ),
    ],
)
def test_bad_payloads_raise_decode_errors_with_a_reason(payload: bytes, expected: str) -> None:
    import re

    with pytest.raises(DecodeError, match=expected if "|" not in expected else None) as info:
        EventDecoder(AnyEvent).decode(payload)
    assert re.search(expected, str(info.value))


def test_topic_unions_reject_events_of_another_topic() -> None:
    with pytest.raises(DecodeError):
        EventDecoder(DocumentEvent).decode(encode(_request()))
    assert isinstance(EventDecoder(AnswerEvent).decode(encode(TokenDelta(request_id="r", seq=1, text="x"))), TokenDelta)
