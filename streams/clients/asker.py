"""Ask questions over Kafka the way any other service would: a plain aiokafka producer and consumer.

The request names a reply topic (and optionally a partition); the client reads that topic from its current end and
keeps only events keyed by its request ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from infra.kafka_security import client_options
from infra.settings import Settings
from schemas.codec import DecodeError, EventDecoder, encode
from schemas.events import (
    AnswerDone,
    AnswerError,
    AnswerEvent,
    CancelRequest,
    QueryOptions,
    QueryRequest,
    ReplyTo,
    new_id,
)
from schemas.topics import Topic
from streams.kafka import ProducerAndTail

_answers: EventDecoder[AnswerEvent] = EventDecoder(AnswerEvent)


class KafkaAsker(ProducerAndTail):
    """Produces query requests and yields their answer events. Use as an async context manager."""

    def __init__(self, settings: Settings, *, reply_topic: str | None = None) -> None:
        self.settings = settings
        self.reply_topic = reply_topic or settings.reply_topic
        super().__init__(settings.kafka_servers, self.reply_topic, auth=client_options(settings))
        self._queues: dict[str, asyncio.Queue[AnswerEvent]] = {}

    async def on_record(self, key: bytes | None, value: bytes | None) -> None:
        queue = self._queues.get(key.decode() if key else "")
        if queue is None or value is None:
            return
        try:
            await queue.put(_answers.decode(value))
        except DecodeError:
            return  # not an answer event (another client's traffic on a shared reply topic)

    async def send(
        self,
        question: str,
        *,
        tenant: str = "default",
        options: QueryOptions | None = None,
        request_id: str | None = None,
    ) -> str:
        request = QueryRequest(
            request_id=request_id or new_id(),
            tenant=tenant,
            question=question,
            reply_to=ReplyTo(topic=self.reply_topic),
            options=options or QueryOptions(),
            deadline=time.time() + self.settings.request_timeout_s,
        )
        self._queues[request.request_id] = asyncio.Queue()
        await self._producer.send_and_wait(
            self.settings.topic(Topic.QUERIES), encode(request), key=request.request_id.encode()
        )
        return request.request_id

    async def events(self, request_id: str, *, timeout_s: float | None = None) -> AsyncIterator[AnswerEvent]:
        """Yield the answer events of one request until its done or error event."""
        queue = self._queues[request_id]
        timeout = timeout_s if timeout_s is not None else self.settings.request_timeout_s
        try:
            while True:
                event = await self._next(queue, timeout)
                yield event
                if isinstance(event, AnswerDone | AnswerError):
                    return
        finally:
            self._queues.pop(request_id, None)

    async def _next(self, queue: asyncio.Queue[AnswerEvent], timeout_s: float) -> AnswerEvent:
        """The next event, waiting at most ``timeout_s`` (TimeoutError), and failing at once if the reader died."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            self.check_reading()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no answer event within {timeout_s:.0f}s")
            try:
                return await asyncio.wait_for(queue.get(), min(left, 1.0))
            except TimeoutError:
                continue

    async def cancel(self, request_id: str) -> None:
        await self._producer.send_and_wait(
            self.settings.topic(Topic.CANCELLATIONS),
            encode(CancelRequest(request_id=request_id)),
            key=request_id.encode(),
        )


async def wait_for_worker(
    settings: Settings,
    *,
    timeout_s: float,
    attempt_s: float = 5.0,
    check: Callable[[], None] | None = None,
) -> None:
    """Returns once an ``llm_echo`` request makes the full round trip through Kafka, a worker and Triton: the one
    readiness test that covers every hop. ``check`` runs before each attempt (e.g. to fail fast when the worker
    process died); raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with KafkaAsker(settings) as asker:
        while time.monotonic() < deadline:
            if check is not None:
                check()
            request_id = await asker.send("ping", options=QueryOptions(max_tokens=1, model="llm_echo"))
            try:
                async for event in asker.events(request_id, timeout_s=attempt_s):
                    if isinstance(event, AnswerDone):
                        return
            except TimeoutError:
                continue
    raise TimeoutError(f"no worker answered within {timeout_s:.0f}s")
