"""The Faust codec for ragstream events (for other Faust apps; the worker's agents decode raw bytes)."""

from __future__ import annotations

import faust
import pytest

from schemas.codec import DecodeError
from schemas.events import AnswerEvent, QueryRequest, ReplyTo
from streams.worker.codec import CODEC_NAME, MsgspecCodec


def _request() -> QueryRequest:
    return QueryRequest(request_id="r1", tenant="acme", question="What is a list?", reply_to=ReplyTo(topic="t"))


def test_faust_codec_is_registered_and_round_trips() -> None:
    codec = faust.serializers.codecs.get_codec(CODEC_NAME)
    event = _request()
    assert codec.loads(codec.dumps(event)) == event
    typed = MsgspecCodec(AnswerEvent)
    with pytest.raises(DecodeError):
        typed.loads(typed.dumps(event))
    with pytest.raises(TypeError):
        codec.dumps({"not": "a struct"})
