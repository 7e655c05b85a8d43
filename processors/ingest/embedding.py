"""Embeddings through a Redis cache keyed by (model, text hash), so re-ingesting unchanged text costs no inference.

Vectors are stored as raw float32 bytes (exactly what the model returned, so a hit is bit-identical to a miss).
Hits and misses are counted in-process, in Redis (``<prefix>:stats``, shared by every worker, read by tests and
benchmarks) and as OpenTelemetry counters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.protocols import Embedder, Vectors

DEFAULT_PREFIX = "ragstream:emb"
DEFAULT_TTL_S = 30 * 24 * 3600


def text_key(prefix: str, model: str, text: str) -> str:
    return f"{prefix}:{model}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


class CachedEmbedder:
    """Wraps an :class:`~processors.protocols.Embedder`; duplicate texts within one call are embedded once."""

    def __init__(
        self,
        embedder: Embedder,
        redis: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        counters: Any = None,
        model_id: str | None = None,
    ) -> None:
        self.embedder = embedder
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        # The cache key names the model's identity, not the serving name, so a new model never reads old vectors.
        self.model = model_id or embedder.model
        self.dim = embedder.dim
        self.hits = 0
        self.misses = 0
        self._counters = counters

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [text_key(self.prefix, self.model, text) for text in texts]
        cached: list[bytes | None] = await self.redis.mget(keys)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, blob in enumerate(cached):
            if blob is not None and len(blob) == 4 * self.dim:
                out[i] = np.frombuffer(blob, dtype=np.float32)
            else:
                missing.setdefault(keys[i], []).append(i)
        hits = len(texts) - len(missing)
        if missing:
            firsts = [rows[0] for rows in missing.values()]
            vectors = np.asarray(await self.embedder.embed([texts[i] for i in firsts]), dtype=np.float32)
            pipe = self.redis.pipeline(transaction=False)
            for (key, rows), vector in zip(missing.items(), vectors, strict=True):
                out[rows] = vector
                pipe.set(key, vector.tobytes(), ex=self.ttl_s)
            await pipe.execute()
        await self._count(hits, len(missing))
        return out

    async def _count(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        pipe = self.redis.pipeline(transaction=False)
        if hits:
            pipe.hincrby(self.stats_key, "hits", hits)
        if misses:
            pipe.hincrby(self.stats_key, "misses", misses)
        await pipe.execute()
        if self._counters is not None:
            self._counters(hits, misses)

    async def shared_stats(self) -> dict[str, int]:
        """Hit/miss totals of every process using this prefix."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.stats_key)
        return {key.decode(): int(value) for key, value in raw.items()}
