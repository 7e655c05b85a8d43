"""Clients of the real services, created lazily on the worker's event loop and closed at shutdown.

Agents get everything through one :class:`Resources`, so a deployment changes addresses in settings, not code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from infra.settings import Settings
from processors.embedder import TritonEmbedder
from processors.reranker import TritonReranker
from processors.triton_client import TritonClient

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._triton: TritonClient | None = None
        self._redis: aioredis.Redis | None = None
        self._milvus: AsyncMilvusClient | None = None

    @property
    def triton(self) -> TritonClient:
        if self._triton is None:
            self._triton = TritonClient(self.settings.triton_address, timeout_s=self.settings.request_timeout_s)
        return self._triton

    @property
    def embedder(self) -> TritonEmbedder:
        return TritonEmbedder(self.triton)

    @property
    def reranker(self) -> TritonReranker:
        return TritonReranker(self.triton)

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.settings.redis_address)
        return self._redis

    @property
    def milvus(self) -> AsyncMilvusClient:
        if self._milvus is None:
            from pymilvus import AsyncMilvusClient

            self._milvus = AsyncMilvusClient(uri=self.settings.milvus_address)
        return self._milvus

    async def close(self) -> None:
        if self._triton is not None:
            await self._triton.close()
            self._triton = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._milvus is not None:
            await self._milvus.close()
            self._milvus = None
