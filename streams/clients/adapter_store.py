"""The LoRA adapter registry on a compacted Kafka topic (``ragstream.adapters.v1``, one partition).

The same design as the prompt store (:mod:`streams.clients.prompt_store`): at start the whole topic is read from the
beginning into an :class:`AdapterRegistryState`, then tailed in the background, so a model server or worker sees a
promotion or a rollback within about a second; writes use ``acks=all`` and wait until the store's own tail applied
them (read-your-writes), so ``ragstream finetune promote``/``rollback`` report the state everyone converges to.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.settings import Settings
from processors.finetune.registry import AdapterError, AdapterRegistryState, record_key
from schemas.codec import EventDecoder, encode
from schemas.events import AdapterRecord, AdapterRef, AdapterRegistered
from schemas.finetune import AdapterEvalReport
from schemas.topics import Topic
from streams.kafka import topic_partitions

log = logging.getLogger(__name__)

_records: EventDecoder[AdapterRecord] = EventDecoder(AdapterRecord)


class KafkaAdapterStore:
    """``async with KafkaAdapterStore(settings) as store:`` then ``store.state.active_ref("acme")``."""

    def __init__(self, settings: Settings, *, topic: str | None = None, start_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.topic = topic or settings.topic(Topic.ADAPTERS)
        self.start_timeout_s = start_timeout_s
        self.state = AdapterRegistryState()
        self._tp = TopicPartition(self.topic, 0)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=0)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        self._position = 0
        self._advanced = asyncio.Condition()
        self._tail: asyncio.Task[None] | None = None
        self._tail_error: BaseException | None = None

    async def __aenter__(self) -> KafkaAdapterStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        try:
            await topic_partitions(self._consumer, self.topic, timeout_s=5.0)
            self._consumer.assign([self._tp])
            await self._consumer.seek_to_beginning(self._tp)
            self._tail = asyncio.create_task(self._follow(), name=f"adapter-store:{self.topic}")
            await self.sync(timeout_s=self.start_timeout_s)
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
        except Exception as exc:
            log.exception("adapter store stopped following %s", self.topic)
            self._tail_error = exc
            async with self._advanced:
                self._advanced.notify_all()

    def _apply_raw(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """A record that cannot be read is skipped with the reason logged: the compacted topic keeps it forever."""
        if value is None:
            return
        try:
            self.state.apply(_records.decode(value))
        except Exception as exc:
            log.warning("skipping adapter record %s@%d (key %r): %s: %s", self.topic, offset, (key or b"")[:80],
                        type(exc).__name__, str(exc)[:300])  # fmt: skip

    async def _wait_for(self, offset: int, timeout_s: float) -> None:
        def reached() -> bool:
            return self._position >= offset or self._tail_error is not None

        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(reached), timeout_s)
        if self._tail_error is not None:
            raise RuntimeError(f"adapter store is not following {self.topic}: {self._tail_error}")

    async def sync(self, timeout_s: float = 10.0) -> None:
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        await self._wait_for(int(end), timeout_s)

    async def _write(self, record: AdapterRecord) -> None:
        meta = await self._producer.send_and_wait(
            self.topic, encode(record), key=record_key(record).encode(), partition=0
        )
        await self._wait_for(int(meta.offset) + 1, timeout_s=10.0)

    # --- writing ------------------------------------------------------------------------------------------------

    async def register(
        self,
        tenant: str,
        *,
        content_hash: str,
        base_model: str,
        path: str,
        data_hash: str = "",
        config_hash: str = "",
        report: AdapterEvalReport | None = None,
        run_id: str = "",
    ) -> tuple[AdapterRegistered, bool]:
        """``(record, created)``: a new candidate version, or the existing one with the same weights."""
        await self.sync()
        record, result = self.state.plan_register(
            tenant, content_hash=content_hash, base_model=base_model, path=path, data_hash=data_hash,
            config_hash=config_hash, report=report, run_id=run_id,
        )  # fmt: skip
        if record is not None:
            await self._write(record)
            stored = self.state.get(tenant, record.adapter.version)
            if stored is None or stored.adapter.content_hash != content_hash:
                raise AdapterError(f"{tenant}@{record.adapter.version} was registered concurrently; retry")
            result = stored
        return result, record is not None

    async def promote(self, tenant: str, version: str, *, force: bool = False) -> AdapterRef | None:
        await self.sync()
        record = self.state.plan_promote(tenant, version, force=force)
        if record is not None:
            await self._write(record)
        return self.state.active_ref(tenant)

    async def rollback(self, tenant: str) -> AdapterRef | None:
        """Back to the previously active adapter, or the base model (None)."""
        await self.sync()
        await self._write(self.state.plan_rollback(tenant))
        return self.state.active_ref(tenant)
