"""The wire format: MessagePack maps of the Structs in :mod:`schemas.events`.

MessagePack keeps events small and fast to decode, and any language with a msgpack library (or a plain aiokafka
producer in another Python service) can produce them: a map with ``kind`` plus the event's fields.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import faust
import msgspec

from schemas.events import AnyEvent

CONTENT_TYPE = "application/x-msgpack"

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


class DecodeError(ValueError):
    """Bytes that are not a valid event of the expected type. The message says why, for the dead letter."""


def encode(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


class EventDecoder(Generic[T]):
    """Decodes one event type or a tagged union of them. Unknown fields are ignored (forward compatibility)."""

    def __init__(self, event_type: Any) -> None:
        self.event_type = event_type
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(event_type)

    def decode(self, data: bytes | bytearray | memoryview) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(str(exc)) from None


any_event_decoder: EventDecoder[AnyEvent] = EventDecoder(AnyEvent)


class MsgspecCodec(faust.Codec):
    """Faust codec for ragstream events: ``topic.send(value=event)`` writes MessagePack.

    Loading returns a decoded event of ``event_type`` (any ragstream event by default). Agents normally read raw
    bytes and decode with :class:`EventDecoder` so a bad message becomes a dead letter rather than a crash.
    """

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


CODEC_NAME = "ragstream-msgpack"
faust.serializers.codecs.register(CODEC_NAME, MsgspecCodec())
