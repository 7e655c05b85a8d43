"""The wire format: MessagePack maps of the Structs in :mod:`schemas.events`.

MessagePack keeps events small and fast to decode, and any language with a msgpack library (or a plain aiokafka
producer in another Python service) can produce them: a map with ``kind`` plus the event's fields.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

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
        except RecursionError:  # deeply nested input: the input's fault, like any other malformed event
            raise DecodeError("undecodable event: nested too deeply") from None
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise DecodeError(f"undecodable event: {type(exc).__name__}: {exc}") from None


any_event_decoder: EventDecoder[AnyEvent] = EventDecoder(AnyEvent)
