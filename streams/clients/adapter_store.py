"""The LoRA adapter registry on a compacted Kafka topic (``ragstream.adapters.v1``, one partition), read and
written like the prompt registry (:mod:`streams.clients.compacted_store`): a worker sees a promotion or a rollback
within about a second, and ``ragstream finetune promote``/``rollback`` report the state everyone converges to.
"""

from __future__ import annotations

import logging

from infra.settings import Settings
from processors.finetune.registry import AdapterError, AdapterRegistryState, record_key
from schemas.codec import EventDecoder
from schemas.events import AdapterRecord, AdapterRef, AdapterRegistered
from schemas.finetune import AdapterEvalReport
from schemas.topics import Topic
from streams.clients.compacted_store import CompactedTopicStore

log = logging.getLogger(__name__)

_records: EventDecoder[AdapterRecord] = EventDecoder(AdapterRecord)


class KafkaAdapterStore(CompactedTopicStore[AdapterRecord]):
    """``async with KafkaAdapterStore(settings) as store:`` then ``store.state.active_ref("acme")``."""

    kind = "adapter"

    def __init__(self, settings: Settings, *, topic: str | None = None, start_timeout_s: float = 30.0) -> None:
        super().__init__(settings, topic or settings.topic(Topic.ADAPTERS), _records, start_timeout_s=start_timeout_s)
        self.state = AdapterRegistryState()

    def apply(self, record: AdapterRecord) -> None:
        self.state.apply(record)

    def key_of(self, record: AdapterRecord) -> str:
        return record_key(record)

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
            await self.write(record)
            stored = self.state.get(tenant, record.adapter.version)
            if stored is None or stored.adapter.content_hash != content_hash:
                raise AdapterError(f"{tenant}@{record.adapter.version} was registered concurrently; retry")
            result = stored
        return result, record is not None

    async def promote(self, tenant: str, version: str, *, force: bool = False) -> AdapterRef | None:
        await self.sync()
        record = self.state.plan_promote(tenant, version, force=force)
        if record is not None:
            await self.write(record)
        return self.state.active_ref(tenant)

    async def rollback(self, tenant: str) -> AdapterRef | None:
        """Back to the previously active adapter, or the base model (None)."""
        await self.sync()
        await self.write(self.state.plan_rollback(tenant))
        return self.state.active_ref(tenant)
