"""The prompt registry on a compacted Kafka topic (``ragstream.prompts.v1``, one partition): see
:mod:`streams.clients.compacted_store` for how it is read and written.

Registering installs the built-in prompts where absent. Two writers racing to register *different* text as the same
new version is the one case this does not arbitrate (the later record wins for everyone); registrations are rare
operator actions.
"""

from __future__ import annotations

import logging

from infra.settings import Settings
from processors.prompts.registry import PromptError, PromptRegistryState, PromptTemplate, builtin_templates, record_key
from schemas.codec import EventDecoder
from schemas.events import PromptRecord, PromptRef
from schemas.topics import Topic
from streams.clients.compacted_store import CompactedTopicStore

log = logging.getLogger(__name__)

_records: EventDecoder[PromptRecord] = EventDecoder(PromptRecord)


class KafkaPromptStore(CompactedTopicStore[PromptRecord]):
    """A live, read-mostly view of the prompt registry plus the operations that change it.

    ``async with KafkaPromptStore(settings) as store:`` then ``store.active("rag_qa")``.
    """

    kind = "prompt"

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        install_builtins: bool = True,
        start_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(settings, topic or settings.topic(Topic.PROMPTS), _records, start_timeout_s=start_timeout_s)
        self.install_builtins = install_builtins
        self.state = PromptRegistryState()

    def apply(self, record: PromptRecord) -> None:
        self.state.apply(record)

    def key_of(self, record: PromptRecord) -> str:
        return record_key(record)

    async def on_loaded(self) -> None:
        if self.install_builtins:
            await self.ensure_builtins()

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
            await self.write(record)
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
            await self.write(record)
        return self.active(name)

    async def rollback(self, name: str) -> PromptTemplate:
        await self.sync()
        await self.write(self.state.plan_rollback(name))
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
