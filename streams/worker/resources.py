"""Clients of the real services and the processors built on them, created lazily on the worker's event loop and
closed at shutdown.

Agents get everything through one :class:`Resources`, so a deployment changes addresses in settings, not code. This
is also where settings become the processors' plain configuration objects (processors never read settings).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from infra.settings import Settings
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.openai_compat import OpenAIBackend, OpenAICompatClient, parse_backends
from processors.adapters.reranker import TritonReranker
from processors.adapters.triton import TritonClient
from processors.generation import Generator, RoutingGenerator
from streams.configure import claim_checker, query_config, router_from_settings
from streams.redis_client import redis_client

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient

    from processors.adapters.doc_states import DocStates
    from processors.adapters.milvus import MilvusIndex
    from processors.query.processor import QueryProcessor
    from streams.clients.adapter_store import KafkaAdapterStore
    from streams.clients.prompt_store import KafkaPromptStore


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Parsed now, so a bad RAGSTREAM_OPENAI_BACKENDS stops the worker at start-up with the reason.
        self.openai_backends: dict[str, OpenAIBackend] = parse_backends(settings.openai_backends)
        self._triton: TritonClient | None = None
        self._openai: dict[str, OpenAICompatClient] = {}
        self._redis: aioredis.Redis | None = None
        self._milvus: AsyncMilvusClient | None = None
        self._states: DocStates | None = None
        self._index: MilvusIndex | None = None
        self._prompts: KafkaPromptStore | None = None
        self._adapters: KafkaAdapterStore | None = None
        self._query: QueryProcessor | None = None
        self._query_lock = asyncio.Lock()

    @property
    def triton(self) -> TritonClient:
        if self._triton is None:
            self._triton = TritonClient(
                self.settings.triton_address,
                timeout_s=self.settings.request_timeout_s,
                adapters_dir=self.settings.adapters_path,  # a TensorRT-LLM model gets the adapter from the worker
            )
        return self._triton

    @property
    def generator(self) -> Generator:
        """Generation for every model: those named in ``openai_backends`` from their OpenAI-compatible servers, the
        rest from Triton. Same deadlines for both: the request timeout bounds the wait for the first token and
        then for each next one, not the length of an answer."""
        if not self.openai_backends:
            return self.triton
        if not self._openai:
            timeout = self.settings.request_timeout_s
            self._openai = {
                name: OpenAICompatClient(backend, timeout_s=timeout) for name, backend in self.openai_backends.items()
            }
        return RoutingGenerator(self.triton, self._openai)

    @property
    def embedder(self) -> TritonEmbedder:
        return TritonEmbedder(self.triton)

    @property
    def bulk_embedder(self) -> TritonEmbedder:
        """The embedder ingestion uses: same vectors as :attr:`embedder`, at a lower CPU priority in Triton."""
        return TritonEmbedder(self.triton, model=self.settings.ingest_embedder_model)

    @property
    def reranker(self) -> TritonReranker:
        return TritonReranker(self.triton)

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = redis_client(self.settings.redis_address)
        return self._redis

    @property
    def milvus(self) -> AsyncMilvusClient:
        if self._milvus is None:
            from processors.adapters.milvus import milvus_client

            self._milvus = milvus_client(self.settings.milvus_address)
        return self._milvus

    @property
    def states(self) -> DocStates:
        """Which version of each document is live (Redis): shared by indexing and search."""
        if self._states is None:
            from processors.adapters.doc_states import DocStates

            self._states = DocStates(self.redis, prefix=self.settings.topic_prefix)
        return self._states

    @property
    def index(self) -> MilvusIndex:
        """The one chunk index of this process: ingestion writes it, the query path searches it."""
        if self._index is None:
            from processors.adapters.milvus import MilvusIndex, collection_name

            self._index = MilvusIndex(
                self.milvus,
                self.settings.milvus_address,
                self.states,
                collection=collection_name(self.settings.topic_prefix),
            )
        return self._index

    async def prompts(self) -> KafkaPromptStore:
        if self._prompts is None:
            from streams.clients.prompt_store import KafkaPromptStore

            store = KafkaPromptStore(self.settings)
            await store.start()
            self._prompts = store
        return self._prompts

    async def adapters(self) -> KafkaAdapterStore:
        """The LoRA adapter registry (``ragstream finetune``): which adapter each tenant's answers use."""
        if self._adapters is None:
            from streams.clients.adapter_store import KafkaAdapterStore

            store = KafkaAdapterStore(self.settings)
            await store.start()
            self._adapters = store
        return self._adapters

    async def query(self) -> QueryProcessor:
        """The query path's processor, built once (the guard models take seconds to load)."""
        async with self._query_lock:
            if self._query is None:
                self._query = await self._build_query()
            return self._query

    async def _build_query(self) -> QueryProcessor:
        from processors.adapters.semantic_cache import SemanticCache
        from processors.guardrails.input_guard import InputGuard
        from processors.guardrails.passage_screen import InjectionScreen
        from processors.guardrails.policy import PolicyStore
        from processors.query.processor import QueryProcessor
        from processors.query.prompting import TemplatePrompts
        from processors.query.router import RoutedChooser

        s = self.settings
        policies = PolicyStore.from_json(s.guard_policies) if s.guard_policies else PolicyStore()
        guard = InputGuard()
        await guard.warm_up()
        store = await self.prompts()
        adapters = await self.adapters()
        return QueryProcessor(
            guard=guard,
            policy_for=policies.for_tenant,
            embedder=self.embedder,
            search=self.index,
            reranker=self.reranker,
            prompts=TemplatePrompts(store.get),
            chooser=RoutedChooser(router_from_settings(s)),
            generator=self.generator,
            cache=SemanticCache(self.redis, threshold=s.cache_threshold, ttl_s=s.cache_ttl_s),
            config=query_config(s),
            checker=claim_checker(s),
            screen=InjectionScreen() if s.screen_passages else None,
            adapter_for=adapters.state.active_ref,
        )

    async def warm_up(self) -> None:
        await self.query()

    @property
    def ready(self) -> bool:
        """The query path's processor is built (its guard models loaded): what a readiness probe waits for."""
        return self._query is not None

    async def close(self) -> None:
        if self._prompts is not None:
            await self._prompts.stop()
            self._prompts = None
        if self._adapters is not None:
            await self._adapters.stop()
            self._adapters = None
        if self._triton is not None:
            await self._triton.close()
            self._triton = None
        for client in self._openai.values():
            await client.close()
        self._openai = {}
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._milvus is not None:
            await self._milvus.close()
            self._milvus = None
