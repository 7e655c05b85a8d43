"""Where stages send their events: :class:`KafkaOutbox` in the worker, :class:`MemoryOutbox` in unit tests.

Both add the current trace context and the event kind as headers, so a test sees exactly the records the worker
would produce (topic, partition, key, event, headers) without a broker. Every answer leaves the worker through
``reply``, which is where answers are counted by outcome (:func:`streams.metrics.count_answer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
import msgspec

from infra.settings import Settings
from schemas.codec import encode
from schemas.events import ReplyTo
from schemas.topics import Topic
from streams import metrics, telemetry
from streams.worker.replies import ReplyAddresses


def _headers(event: msgspec.Struct, extra: Mapping[str, bytes] | None) -> dict[str, bytes]:
    headers = {**telemetry.headers_from_context(), **(extra or {})}
    tag = event.__struct_config__.tag  # the ``kind`` on the wire, e.g. "answer.delta"
    headers["ragstream-kind"] = str(tag if tag is not None else type(event).__name__).encode()
    return headers


def _key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Outbox(Protocol):
    async def reply(self, reply_to: ReplyTo, request_id: str, event: msgspec.Struct) -> None:
        """Send ``event`` to the client's reply address, keyed by its request id."""
        ...

    async def emit(self, topic: Topic, key: str | bytes | None, event: msgspec.Struct) -> None:
        """Send ``event`` to one of the deployment's topics; returns after the broker's acknowledgement."""
        ...

    async def emit_many(self, topic: Topic, keyed: Iterable[tuple[str | bytes | None, msgspec.Struct]]) -> None:
        """A fan-out (one document's chunks), acknowledged together."""
        ...


class KafkaOutbox:
    """Produces through the Faust app's producer, with the current trace context in the headers. Replies go only
    to addresses ``replies`` accepts (a made-up reply topic would stall the producer for minutes)."""

    def __init__(self, app: faust.App, settings: Settings, *, replies: ReplyAddresses | None = None) -> None:
        self.app = app
        self.settings = settings
        self.replies = replies

    async def send(
        self,
        topic: str,
        key: str | bytes | None,
        event: msgspec.Struct,
        *,
        partition: int | None = None,
        headers: Mapping[str, bytes] | None = None,
        wait: bool = True,
    ) -> Awaitable[Any]:
        """Produces the event; with ``wait`` (the default) returns after the broker's acknowledgement: the input's
        offset is committed once the handler returns, so an output still in the producer's buffer when the broker
        goes away would otherwise be lost. Without it, the returned awaitable resolves on the ack."""
        all_headers = _headers(event, headers)
        delivery: Awaitable[Any] = await self.app.producer.send(
            topic, _key(key), encode(event), partition, None, list(all_headers.items())
        )
        if wait:
            await delivery
        return delivery

    async def reply(self, reply_to: ReplyTo, request_id: str, event: msgspec.Struct) -> None:
        if self.replies is not None:
            await self.replies.check(reply_to)
        await self.send(reply_to.topic, request_id, event, partition=reply_to.partition)
        metrics.count_answer(event)

    async def emit(self, topic: Topic, key: str | bytes | None, event: msgspec.Struct) -> None:
        await self.send(self.settings.topic(topic), key, event)

    async def emit_many(self, topic: Topic, keyed: Iterable[tuple[str | bytes | None, msgspec.Struct]]) -> None:
        """All go into the producer's batches first, then every ack is awaited: N events, one round trip."""
        name = self.settings.topic(topic)
        deliveries = [await self.send(name, key, event, wait=False) for key, event in keyed]
        await asyncio.gather(*deliveries)


@dataclass(frozen=True)
class SentRecord:
    topic: str
    partition: int | None
    key: bytes | None
    event: msgspec.Struct
    headers: dict[str, bytes]


@dataclass
class MemoryOutbox:
    """Keeps every record in :attr:`sent`, in order; ``fail_topics`` makes sends to those topics raise, the way a
    produce to a missing topic does."""

    settings: Settings
    sent: list[SentRecord] = field(default_factory=list)
    fail_topics: set[str] = field(default_factory=set)

    async def _send(self, topic: str, partition: int | None, key: str | bytes | None, event: msgspec.Struct) -> None:
        if topic in self.fail_topics:
            raise ConnectionError(f"cannot produce to {topic}")
        self.sent.append(SentRecord(topic, partition, _key(key), event, _headers(event, None)))

    async def reply(self, reply_to: ReplyTo, request_id: str, event: msgspec.Struct) -> None:
        await self._send(reply_to.topic, reply_to.partition, request_id, event)
        metrics.count_answer(event)

    async def emit(self, topic: Topic, key: str | bytes | None, event: msgspec.Struct) -> None:
        await self._send(self.settings.topic(topic), None, key, event)

    async def emit_many(self, topic: Topic, keyed: Iterable[tuple[str | bytes | None, msgspec.Struct]]) -> None:
        for key, event in keyed:
            await self.emit(topic, key, event)

    def on(self, topic: str) -> list[msgspec.Struct]:
        """The events sent to ``topic``, in order."""
        return [record.event for record in self.sent if record.topic == topic]
