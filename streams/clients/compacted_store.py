"""A live view of a registry kept on a compacted, one-partition Kafka topic: the prompt registry and the LoRA
adapter registry share it.

At start the whole topic is read from the beginning into the registry's state, then tailed in the background, so a
worker sees a promotion or rollback within about a second without restarting. Writes use ``acks=all`` and wait until
the store's own tail has applied them (read-your-writes), so a CLI command reports the state the whole fleet will
converge to. One partition gives every reader the same order; the state is "last record per key wins", which is what
compaction keeps.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Generic, Self, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka_security import client_options
from infra.settings import Settings
from schemas.codec import EventDecoder, encode
from streams.kafka import topic_partitions

log = logging.getLogger(__name__)

R = TypeVar("R", bound=msgspec.Struct)


class CompactedTopicStore(Generic[R]):
    """Follows ``topic`` and applies each record with :meth:`apply`; subclasses add the registry's operations.

    ``kind`` names the records in log lines and errors ("prompt", "adapter")."""

    kind = "record"

    def __init__(self, settings: Settings, topic: str, decoder: EventDecoder[R], *, start_timeout_s: float) -> None:
        self.settings = settings
        self.topic = topic
        self.start_timeout_s = start_timeout_s
        self._decoder = decoder
        self._tp = TopicPartition(topic, 0)
        auth = client_options(settings)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=0, **auth)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            **auth,
        )
        self._position = 0  # next offset to apply
        self._advanced = asyncio.Condition()
        self._tail: asyncio.Task[None] | None = None
        self._tail_error: BaseException | None = None

    # --- what a registry supplies -------------------------------------------------------------------------------

    def apply(self, record: R) -> None:
        """Fold one record into the state; raise to have it skipped (logged with the reason)."""
        raise NotImplementedError

    def key_of(self, record: R) -> str:
        """The compaction key: the last record per key is what the topic keeps."""
        raise NotImplementedError

    async def on_loaded(self) -> None:
        """Called once the whole topic has been applied at start (e.g. to install built-ins)."""

    # --- life cycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load everything on the topic, then keep following."""
        await self._producer.start()
        await self._consumer.start()
        try:
            await topic_partitions(self._consumer, self.topic, timeout_s=5.0)
            self._consumer.assign([self._tp])
            await self._consumer.seek_to_beginning(self._tp)
            self._tail = asyncio.create_task(self._follow(), name=f"{self.kind}-store:{self.topic}")
            await self.sync(timeout_s=self.start_timeout_s)
            await self.on_loaded()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            await asyncio.gather(self._tail, return_exceptions=True)
            self._tail = None
        await self._consumer.stop()
        await self._producer.stop()

    async def _follow(self) -> None:
        try:
            while True:
                batch = await self._consumer.getmany(self._tp, timeout_ms=500)
                for record in batch.get(self._tp, []):
                    self._apply_raw(record.key, record.value, record.offset)
                position = await self._consumer.position(self._tp)
                async with self._advanced:
                    self._position = max(self._position, position)
                    self._advanced.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to every waiter instead of hanging them
            log.exception("%s store stopped following %s", self.kind, self.topic)
            self._tail_error = exc
            async with self._advanced:
                self._advanced.notify_all()

    def _apply_raw(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """Apply one record; a record that cannot be read or applied is skipped with the reason logged, because the
        compacted topic keeps it forever and every process would otherwise stop at it on every start."""
        if value is None:  # a tombstone: nothing we write, nothing to keep
            return
        try:
            self.apply(self._decoder.decode(value))
        except Exception as exc:
            log.warning("skipping %s record %s@%d (key %r): %s: %s", self.kind, self.topic, offset, (key or b"")[:80],
                        type(exc).__name__, str(exc)[:300])  # fmt: skip

    async def _wait_for(self, offset: int, timeout_s: float) -> None:
        """Until every record before ``offset`` has been applied."""

        def reached() -> bool:
            return self._position >= offset or self._tail_error is not None

        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(reached), timeout_s)
        if self._tail_error is not None:
            raise RuntimeError(f"{self.kind} store is not following {self.topic}: {self._tail_error}")

    async def sync(self, timeout_s: float = 10.0) -> None:
        """Catch up with everything written to the topic so far (by anyone)."""
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        await self._wait_for(int(end), timeout_s)

    async def write(self, record: R) -> None:
        """Append ``record`` and return once this store has applied it."""
        meta = await self._producer.send_and_wait(
            self.topic, encode(record), key=self.key_of(record).encode(), partition=0
        )
        await self._wait_for(int(meta.offset) + 1, timeout_s=10.0)
