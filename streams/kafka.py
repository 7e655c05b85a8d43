"""Kafka plumbing every client and process shares: waiting for a topic to be usable, following a topic from its
end, and a producer plus a tailing consumer that start and stop together (:class:`ProducerAndTail`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


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


async def partition_count(consumer: AIOKafkaConsumer, topic: str) -> int:
    """How many partitions ``topic`` has right now (0: it does not exist), from fresh cluster metadata.

    ``consumer.partitions_for_topic`` reads the metadata the consumer already holds, which never includes a topic
    it does not read; the full metadata request is what ``consumer.topics()`` makes, kept here with its partitions.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return len(cluster.partitions_for_topic(topic) or ())


async def follow_from_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to a started consumer, positioned at the current end."""
    assigned = await topic_partitions(consumer, topic)
    consumer.assign(assigned)
    await consumer.seek_to_end(*assigned)
    for tp in assigned:  # resolve the end offsets now, before anything is sent
        await consumer.position(tp)
    return assigned


async def follow_since(consumer: AIOKafkaConsumer, topic: str, since: float) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to a started consumer, positioned at the first record written at or
    after the Unix time ``since`` (the end, where there is none)."""
    assigned = await topic_partitions(consumer, topic)
    consumer.assign(assigned)
    starts = await consumer.offsets_for_times(dict.fromkeys(assigned, int(since * 1000)))
    ends = await consumer.end_offsets(assigned)
    for tp in assigned:
        found = starts.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])
    return assigned


class ProducerAndTail:
    """A producer and a consumer that follows one topic from its current end, with a task reading it.

    Use as an async context manager; subclasses implement :meth:`on_record` (called for every record, in order).
    Started in that order (producer, consumer at the end, reader) so nothing sent after ``__aenter__`` is missed.
    """

    def __init__(
        self,
        bootstrap: str,
        tail_topic: str,
        *,
        fetch_max_wait_ms: int = 10,
        auth: Mapping[str, Any] | None = None,
        **producer: Any,
    ) -> None:
        """``auth``: the security options of both clients (:func:`infra.kafka_security.client_options`)."""
        self.tail_topic = tail_topic
        auth = dict(auth or {})
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, **{"acks": "all", "linger_ms": 0, **producer, **auth}
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
            group_id=None,
            **auth,
        )
        self._reader: asyncio.Task[None] | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def __aenter__(self) -> Self:
        await self._producer.start()
        try:
            await self._consumer.start()
            await follow_from_end(self._consumer, self.tail_topic)
        except BaseException:
            await self._consumer.stop()
            await self._producer.stop()
            raise
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
            await self.on_record(record.key, record.value)

    def check_reading(self) -> None:
        """Raise if the reader stopped (a broker error it could not get past): a waiter must not wait forever for
        records nobody is reading."""
        reader = self._reader
        if reader is not None and reader.done() and not reader.cancelled():
            error = reader.exception()
            raise RuntimeError(f"stopped reading {self.tail_topic}: {type(error).__name__}: {error}") from error

    async def on_record(self, key: bytes | None, value: bytes | None) -> None:
        raise NotImplementedError
