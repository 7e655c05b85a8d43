"""Ask questions over Kafka the way any other service would: a plain aiokafka producer and consumer.

The request names a reply topic (and optionally a partition); the client reads that topic from its current end and
keeps only events keyed by its request ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.settings import Settings
from schemas.codec import EventDecoder, encode
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
from streams.topics import topic_name

_answers: EventDecoder[AnswerEvent] = EventDecoder(AnswerEvent)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, *, timeout_s: float = 10.0) -> list[TopicPartition]:
    """Every partition of ``topic``, once the started consumer's metadata shows each with a leader.

    A topic created a moment ago may be missing from the metadata, or have no leaders yet: refresh until it is
    usable or the deadline passes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            cluster = consumer._client.cluster
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            leaders = [cluster.leader_for_partition(tp) for tp in tps]
            if all(leader is not None and leader >= 0 for leader in leaders):
                return tps
        if loop.time() > deadline:
            raise RuntimeError(f"topic {topic} does not exist or has no leaders (run `ragstream up`)")
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.1)


async def follow_from_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to a started consumer, positioned at the current end."""
    assigned = await topic_partitions(consumer, topic)
    consumer.assign(assigned)
    await consumer.seek_to_end(*assigned)
    for tp in assigned:  # resolve the end offsets now, before anything is sent
        await consumer.position(tp)
    return assigned


class KafkaAsker:
    """Produces query requests and yields their answer events. Use as an async context manager."""

    def __init__(self, settings: Settings, *, reply_topic: str | None = None) -> None:
        self.settings = settings
        self.reply_topic = reply_topic or settings.reply_topic
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=0)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            group_id=None,
        )
        self._queues: dict[str, asyncio.Queue[AnswerEvent]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaAsker:
        await self._producer.start()
        await self._consumer.start()
        await follow_from_end(self._consumer, self.reply_topic)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        async for record in self._consumer:
            request_id = record.key.decode() if record.key else ""
            queue = self._queues.get(request_id)
            if queue is None or record.value is None:
                continue
            await queue.put(_answers.decode(record.value))

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
            topic_name("queries", self.settings), encode(request), key=request.request_id.encode()
        )
        return request.request_id

    async def events(self, request_id: str, *, timeout_s: float | None = None) -> AsyncIterator[AnswerEvent]:
        """Yield the answer events of one request until its done or error event."""
        queue = self._queues[request_id]
        timeout = timeout_s if timeout_s is not None else self.settings.request_timeout_s
        try:
            while True:
                event = await asyncio.wait_for(queue.get(), timeout)
                yield event
                if isinstance(event, AnswerDone | AnswerError):
                    return
        finally:
            self._queues.pop(request_id, None)

    async def cancel(self, request_id: str) -> None:
        await self._producer.send_and_wait(
            topic_name("cancellations", self.settings),
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
