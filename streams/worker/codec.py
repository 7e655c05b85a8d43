"""A Faust codec for ragstream events, for code that wants ``topic.send(value=event)`` to write MessagePack.

The worker's own agents read raw bytes and decode with :class:`schemas.codec.EventDecoder`, so that a bad message
becomes a dead letter rather than an exception inside Faust's stream machinery; this codec is for other Faust apps.
"""

from __future__ import annotations

from typing import Any

import faust
import msgspec

from schemas.codec import EventDecoder, encode
from schemas.events import AnyEvent

CODEC_NAME = "ragstream-msgpack"


class MsgspecCodec(faust.Codec):
    """Loading returns a decoded event of ``event_type`` (any ragstream event by default)."""

    def __init__(self, event_type: Any = AnyEvent, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._event_decoder: EventDecoder[Any] = EventDecoder(event_type)

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes | bytearray):
            return bytes(obj)
        if not isinstance(obj, msgspec.Struct):
            raise TypeError(f"ragstream events must be msgspec Structs, not {type(obj).__name__}")
        return encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self._event_decoder.decode(s)


faust.serializers.codecs.register(CODEC_NAME, MsgspecCodec())
