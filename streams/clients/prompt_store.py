"""The prompt registry on a compacted Kafka topic (``ragstream.prompts.v1``, one partition).

At start the store reads the whole topic from the beginning into a :class:`PromptRegistryState`, registers the
built-in prompts where absent, and then keeps tailing the topic in the background, so a worker sees a promotion or
rollback within about a second without restarting. Writes use ``acks=all`` and wait until the store's own tail has
applied them (read-your-writes), so a CLI command reports the state the whole fleet will converge to.

Concurrency: one partition gives every reader the same order, and the state is "last record per key wins", which
is what compaction keeps. Two writers racing to register *different* text as the same new version is the one case
this does not arbitrate (the later record wins for everyone); registrations are rare operator actions.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka_security import client_options
from infra.settings import Settings
from processors.prompts.registry import PromptError, PromptRegistryState, PromptTemplate, builtin_templates, record_key
from schemas.codec import EventDecoder, encode
from schemas.events import PromptRecord, PromptRef
from schemas.topics import Topic
from streams.kafka import topic_partitions

log = logging.getLogger(__name__)

_records: EventDecoder[PromptRecord] = EventDecoder(PromptRecord)


class KafkaPromptStore:
    """A live, read-mostly view of the prompt registry plus the operations that change it.

    ``async with KafkaPromptStore(settings) as store:`` then ``store.active("rag_qa")``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        install_builtins: bool = True,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.topic(Topic.PROMPTS)
        self.install_builtins = install_builtins
        self.start_timeout_s = start_timeout_s
        self.state = PromptRegistryState()
        self._tp = TopicPartition(self.topic, 0)
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

    async def __aenter__(self) -> KafkaPromptStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load everything on the topic, install built-ins where absent, then keep following."""
        await self._producer.start()
        await self._consumer.start()
        try:
            await topic_partitions(self._consumer, self.topic, timeout_s=5.0)
            self._consumer.assign([self._tp])
            await self._consumer.seek_to_beginning(self._tp)
            self._tail = asyncio.create_task(self._follow(), name=f"prompt-store:{self.topic}")
            await self.sync(timeout_s=self.start_timeout_s)
            if self.install_builtins:
                await self.ensure_builtins()
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
                records = batch.get(self._tp, [])
                for record in records:
                    self._apply_raw(record.key, record.value, record.offset)
                position = await self._consumer.position(self._tp)
                async with self._advanced:
                    self._position = max(self._position, position)
                    self._advanced.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced to every waiter instead of hanging them
            log.exception("prompt store stopped following %s", self.topic)
            self._tail_error = exc
            async with self._advanced:
                self._advanced.notify_all()

    def _apply_raw(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """Apply one record; a record that cannot be read or applied is skipped with the reason logged, because the
        compacted topic keeps it forever and every worker would otherwise stop at it on every start."""
        if value is None:  # a tombstone: nothing we write, nothing to keep
            return
        try:
            self.state.apply(_records.decode(value))
        except Exception as exc:
            log.warning("skipping prompt record %s@%d (key %r): %s: %s", self.topic, offset, (key or b"")[:80],
                        type(exc).__name__, str(exc)[:300])  # fmt: skip

    async def _wait_for(self, offset: int, timeout_s: float) -> None:
        """Until every record before ``offset`` has been applied."""

        def reached() -> bool:
            return self._position >= offset or self._tail_error is not None

        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(reached), timeout_s)
        if self._tail_error is not None:
            raise RuntimeError(f"prompt store is not following {self.topic}: {self._tail_error}")

    async def sync(self, timeout_s: float = 10.0) -> None:
        """Catch up with everything written to the topic so far (by anyone)."""
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        await self._wait_for(int(end), timeout_s)

    async def _write(self, record: PromptRecord) -> None:
        meta = await self._producer.send_and_wait(
            self.topic, encode(record), key=record_key(record).encode(), partition=0
        )
        await self._wait_for(int(meta.offset) + 1, timeout_s=10.0)

    # --- reading ------------------------------------------------------------------------------------------------

    def active(self, name: str) -> PromptTemplate:
        """The active version of ``name``; what the query path renders."""
        return self.state.resolve(name)

    def get(self, name: str, version: str | None = None) -> PromptTemplate:
        """A specific version, or the active one when ``version`` is None (e.g. ``QueryOptions.prompt_version``)."""
        return self.state.resolve(name, version)

    def active_ref(self, name: str) -> PromptRef:
        return self.active(name).ref

    # --- writing ------------------------------------------------------------------------------------------------

    async def register(
        self,
        name: str,
        template: str,
        *,
        description: str = "",
        variables: list[str] | tuple[str, ...] | None = None,
        promote: bool = False,
    ) -> tuple[PromptTemplate, bool]:
        """``(template, created)``: a new version, or the existing one with identical text (``created`` False)."""
        await self.sync()
        record, result = self.state.plan_register(name, template, description=description, variables=variables)
        if record is not None:
            await self._write(record)
            stored = self.state.get(name, record.version)
            if stored is None or stored.content_hash != record.content_hash:
                raise PromptError(f"{name}@{record.version} was registered concurrently by another writer; retry")
            result = stored
        if promote:
            await self.promote(name, result.version)
        return result, record is not None

    async def promote(self, name: str, version: str) -> PromptTemplate:
        await self.sync()
        record = self.state.plan_promote(name, version)
        if record is not None:
            await self._write(record)
        return self.active(name)

    async def rollback(self, name: str) -> PromptTemplate:
        await self.sync()
        await self._write(self.state.plan_rollback(name))
        return self.active(name)

    async def ensure_builtins(self) -> list[PromptTemplate]:
        """Register and activate each shipped prompt as version "1" when the registry has no version of it."""
        installed = []
        for name, spec in builtin_templates().items():
            if self.state.versions(name):
                continue
            template, _ = await self.register(
                name, spec.template, description=spec.description, variables=spec.variables, promote=True
            )
            installed.append(template)
            log.info("installed built-in prompt %s@%s", name, template.version)
        return installed
