"""How OpenAI requests become bridge asks and bridge errors become OpenAI errors, without sockets or Kafka."""

from __future__ import annotations

import json

import pytest

from streams.bridge import openai_api
from streams.bridge import protocol as proto


def parsed(**body: object) -> openai_api.CompletionRequest:
    return openai_api.parse_request(json.dumps({"model": "ragstream", **body}).encode())


def test_the_question_is_the_last_user_message_and_ragstream_lets_the_router_choose() -> None:
    body = parsed(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "question"}]},
        ],
        max_tokens=10,
        max_completion_tokens=20,
        temperature=0.3,
        ragstream={"use_cache": False, "session_id": "s1", "rerank": False},
    )
    ask = openai_api.ask_of(body)
    assert ask.question == "second question" and ask.session_id == "s1"
    assert ask.options.model is None and ask.options.max_tokens == 20 and ask.options.temperature == 0.3
    assert ask.options.use_cache is False and ask.options.rerank is False
    named = openai_api.ask_of(parsed(model="llm_echo", messages=[{"role": "user", "content": "q"}]))
    assert named.options.model == "llm_echo" and named.options.use_cache is True
    assert named.options.rerank is None  # the deployment decides


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b'{"model": "ragstream", "messages": [{"role": "assistant", "content": "hi"}]}', "messages", "user message"),
        (b'{"model": "ragstream", "messages": [{"role": "user", "content": "q"}], "n": 2}', "n", "n=1"),
        (b'{"model": "ragstream", "messages": [{"role": "user"}], "ragstream": {"cache": 1}}', None, "cache"),
        (b"{not json", None, "invalid request body"),
    ],
)
def test_bad_requests_are_400_with_the_field_that_is_wrong(raw: bytes, param: str | None, words: str) -> None:
    with pytest.raises(openai_api.ApiError) as bad:
        openai_api.ask_of(openai_api.parse_request(raw))
    error = bad.value.body["error"]
    assert bad.value.status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"]


def test_bridge_errors_map_to_openai_statuses_and_a_block_is_a_content_filter() -> None:
    blocked = openai_api.api_error(proto.Error(code="blocked", message="blocked by the input guard: injection"))
    assert blocked.status == 400 and blocked.body["error"]["code"] == "content_filter"
    assert openai_api.api_error(proto.Error(code=proto.TIMEOUT, message="m")).status == 504
    assert openai_api.api_error(proto.Error(code=proto.UNAVAILABLE, message="m")).status == 503
    assert openai_api.api_error(proto.Error(code=proto.TOO_MANY_REQUESTS, message="m")).status == 429
    failed = openai_api.api_error(proto.Error(code="stage_failed", message="m"))
    assert failed.status == 500 and failed.body["error"]["type"] == "server_error"


def test_ragstreams_finish_reasons_have_an_openai_counterpart() -> None:
    assert openai_api.FINISH_REASONS == {
        "stop": "stop",
        "length": "length",
        "cancelled": "stop",
        "refused": "stop",
        "blocked": "content_filter",
    }
