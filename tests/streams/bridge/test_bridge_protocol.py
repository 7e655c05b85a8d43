"""The bridge's message protocol and auth parsing, without sockets or Kafka."""

from __future__ import annotations

import json

import msgspec
import pytest

from infra.settings import Settings
from schemas.events import AnswerDone, AnswerError, Citation, PromptRef, TokenDelta, Usage
from streams.bridge import protocol as proto
from streams.bridge.auth import parse_api_keys, request_api_key
from streams.bridge.server import instance_id


def test_client_messages_decode_with_defaults_and_unknown_option_fields_ignored() -> None:
    ask = proto.decode_client('{"type":"ask","question":"q","options":{"model":"llm_echo","max_tokens":5,"x":1}}')
    assert isinstance(ask, proto.Ask)
    assert ask.id is None and ask.options.model == "llm_echo" and ask.options.max_tokens == 5
    resume = proto.decode_client('{"type":"resume","id":"abc","after_seq":3}')
    assert isinstance(resume, proto.Resume) and resume.after_seq == 3
    cancel = proto.decode_client('{"type":"cancel","id":7}')
    assert isinstance(cancel, proto.Cancel) and cancel.id == 7


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"type":"ask"}', "missing required field `question`"),
        ('{"type":"fly","id":1}', "Invalid value 'fly'"),
        ('{"type":"ask","question":"q","options":{"max_tokens":"many"}}', "Expected `int | null`"),
        ("not json", "malformed"),
    ],
)
def test_bad_client_messages_say_why(frame: str, reason: str) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError), match=reason):
        proto.decode_client(frame)


def test_a_done_event_becomes_its_citations_then_done() -> None:
    done = AnswerDone(
        request_id="r1",
        text="Use sorted [1].",
        citations=[
            Citation(
                number=1,
                chunk_id="c9",
                doc_id="howto/sorting",
                source_uri="file:///s.txt",
                title="Sort",
                heading_path=["Sorting", "Key functions"],
            )
        ],
        model="llm_small",
        prompt_ref=PromptRef(name="rag_qa", version="3", content_hash="abc"),
        usage=Usage(prompt_tokens=10, completion_tokens=4),
        timings_ms={"generate": 12.5},
        deltas=2,
    )
    messages = [json.loads(proto.encode_server(m)) for m in proto.to_client(done)]
    assert [m["type"] for m in messages] == ["citation", "done"]
    assert messages[0] == {
        "type": "citation",
        "request_id": "r1",
        "number": 1,
        "source_uri": "file:///s.txt",
        "title": "Sort",
        "doc_id": "howto/sorting",
        "chunk_id": "c9",
        "heading_path": ["Sorting", "Key functions"],
    }
    assert messages[1]["prompt"] == {"name": "rag_qa", "version": "3", "content_hash": "abc"}
    assert messages[1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 4}
    assert messages[1]["deltas"] == 2 and messages[1]["finish_reason"] == "stop" and messages[1]["cached"] is False


def test_tokens_and_errors_map_one_to_one() -> None:
    (token,) = proto.to_client(TokenDelta(request_id="r", seq=4, text=" hi"))
    assert json.loads(proto.encode_server(token)) == {"type": "token", "request_id": "r", "seq": 4, "text": " hi"}
    (error,) = proto.to_client(AnswerError(request_id="r", code="stage_failed", message="m", retryable=True))
    body = json.loads(proto.encode_server(error))
    assert body["type"] == "error" and body["code"] == "stage_failed" and body["retryable"] is True


def test_api_keys_parse_and_reject_malformed_pairs() -> None:
    assert parse_api_keys("a:acme, b:beta,") == {"a": "acme", "b": "beta"}
    with pytest.raises(ValueError, match="key:tenant"):
        parse_api_keys("secretwithoutcolon")


def test_the_key_comes_from_the_bearer_header_or_the_query() -> None:
    assert request_api_key("Bearer k1", "/?api_key=other") == "k1"
    assert request_api_key("", "/?api_key=k2&x=1") == "k2"
    assert request_api_key("Basic zzz", "/") is None


def test_instance_ids_are_safe_topic_name_parts() -> None:
    assert instance_id(Settings.from_env({}, bridge_instance="pod/7 a")) == "pod-7-a"
    assert instance_id(Settings.from_env({}, bridge_port=9000)).endswith("-9000")
