"""In-process implementations of the protocols in :mod:`processors.protocols` and :mod:`processors.generation`.

They behave like the real services on a small scale (an embedder that hashes words, a cosine index, a cache with the
same matching rule as the Redis one, a model that streams a script), so the query path can be exercised in a unit
test or a notebook without Triton, Milvus or Redis. They are real implementations, not mocks: the tests that use
them assert what the processor does with real data flowing through.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from processors.adapters.semantic_cache import question_signature
from processors.generation import ChatMessage, GenerationError, GenerationParams, StreamStats
from processors.protocols import CachedAnswer, CacheHit, SearchMode, Vectors
from schemas.events import AnswerDone, Passage
from schemas.topics import Topic

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 2]


class HashingEmbedder:
    """Bag of words hashed into ``dim`` buckets, L2-normalised: texts sharing words are close, others are not."""

    def __init__(self, *, dim: int = 64, model: str = "hashing") -> None:
        self.dim = dim
        self.model = model

    def _one(self, text: str) -> Vectors:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in _words(text):
            vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % self.dim] += 1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(text) for text in texts])


class MemoryIndex:
    """A :class:`~processors.protocols.Search` over passages held in memory, ranked by cosine similarity."""

    def __init__(self, embedder: HashingEmbedder) -> None:
        self.embedder = embedder
        self._rows: dict[str, list[tuple[Passage, Vectors]]] = {}

    async def add(self, tenant: str, passages: Sequence[Passage]) -> None:
        vectors = await self.embedder.embed([p.text for p in passages])
        self._rows.setdefault(tenant, []).extend(zip(passages, vectors, strict=True))

    async def search(
        self,
        tenant: str,
        query_text: str,
        query_vector: Sequence[float] | None,
        top_k: int = 20,
        mode: SearchMode = "hybrid",
    ) -> list[Passage]:
        query = (
            np.asarray(query_vector, dtype=np.float32)
            if query_vector is not None
            else (await self.embedder.embed([query_text]))[0]
        )
        scored = [(float(np.dot(query, vector)), passage) for passage, vector in self._rows.get(tenant, [])]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return [msgspec.structs.replace(p, score=score) for score, p in scored[:top_k] if score > 0]


class OverlapReranker:
    """A :class:`~processors.protocols.Reranker` scoring the share of the query's words found in the passage."""

    async def rerank(self, query: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        asked = set(_words(query))
        scored = [
            (len(asked & set(_words(p.text))) / len(asked) if asked else 0.0, index, p)
            for index, p in enumerate(passages)
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [msgspec.structs.replace(p, score=score) for score, _, p in scored[:top_k]]


class MemoryAnswerCache:
    """An :class:`~processors.protocols.AnswerCache` with the Redis cache's rule: cosine >= ``threshold`` and an
    equal question signature, scoped by tenant and prompt version, dropped when a cited document changes."""

    def __init__(self, *, threshold: float = 0.9) -> None:
        self.threshold = threshold
        self._entries: dict[str, tuple[str, str, Vectors, CachedAnswer]] = {}  # id -> (scope, signature, vector, ...)

    async def lookup(
        self, tenant: str, prompt_key: str, question: str, vector: Vectors | Sequence[float]
    ) -> CacheHit | None:
        scope, signature = f"{tenant}:{prompt_key}", question_signature(question)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        best: CacheHit | None = None
        for entry_id, (entry_scope, entry_signature, entry_vector, answer) in self._entries.items():
            if entry_scope != scope or entry_signature != signature:
                continue
            denominator = float(np.linalg.norm(query) * np.linalg.norm(entry_vector))
            similarity = float(np.dot(query, entry_vector)) / denominator if denominator > 0 else 0.0
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = CacheHit(entry_id=entry_id, similarity=similarity, answer=answer)
        return best

    async def store(
        self, tenant: str, prompt_key: str, question: str, vector: Vectors | Sequence[float], answer: AnswerDone
    ) -> str:
        entry_id = uuid.uuid4().hex
        scope = f"{tenant}:{prompt_key}"
        cached = CachedAnswer.of(question, answer, scope)
        vector_array = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._entries[entry_id] = (scope, question_signature(question), vector_array, cached)
        return entry_id

    async def invalidate_documents(self, tenant: str, doc_ids: Sequence[str]) -> int:
        stale = [
            entry_id
            for entry_id, (scope, _, _, answer) in self._entries.items()
            if scope.startswith(f"{tenant}:") and set(answer.doc_ids) & set(doc_ids)
        ]
        for entry_id in stale:
            del self._entries[entry_id]
        return len(stale)


@dataclass
class Script:
    """What a :class:`ScriptedGenerator` model does: stream ``pieces`` (``delay_s`` apart), or fail first."""

    pieces: Sequence[str] = ()
    delay_s: float = 0.0
    fail_before_first: str | None = None  # the error message, when the model fails before its first token


@dataclass
class ScriptedGenerator:
    """A :class:`~processors.generation.Generator` whose models stream fixed scripts; records every call.

    ``closed`` lists the request ids whose stream was closed before its script ended (the caller cancelled).
    """

    scripts: dict[str, Script]
    calls: list[tuple[str, list[ChatMessage], GenerationParams]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncGenerator[str, None]:
        self.calls.append((model, list(messages), params))
        script = self.scripts.get(model)
        if script is None:
            raise GenerationError(f"{model}: no such model", retryable=False, before_output=True)
        if script.fail_before_first is not None:
            raise GenerationError(f"{model}: {script.fail_before_first}", retryable=True, before_output=True)
        finished = False
        try:
            for produced, piece in enumerate(script.pieces[: params.max_tokens]):
                if script.delay_s:
                    await asyncio.sleep(script.delay_s)
                if stats is not None:
                    stats.model = model
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    stats.chunks = produced + 1
                yield piece
            finished = True
        finally:
            if stats is not None:
                stats.finished_at = time.monotonic()
            if not finished:
                self.closed.append(request_id)


@dataclass
class MemorySink:
    """An :class:`~processors.protocols.EventSink` that keeps every event it is given, in order."""

    events: list[tuple[Topic, str | bytes | None, msgspec.Struct]] = field(default_factory=list)

    async def emit(self, topic: Topic, key: str | bytes | None, event: msgspec.Struct) -> None:
        self.events.append((topic, key, event))

    async def emit_many(self, topic: Topic, keyed: Iterable[tuple[str | bytes | None, msgspec.Struct]]) -> None:
        for key, event in keyed:
            await self.emit(topic, key, event)

    def on(self, topic: Topic) -> list[msgspec.Struct]:
        return [event for t, _, event in self.events if t == topic]
