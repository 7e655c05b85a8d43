"""What the stages need from the outside world, as protocols; implementations live in :mod:`processors.adapters`.

The query and ingest processors take these, never a concrete client, so each can run against the real services
(Triton, Milvus, Redis) or against the in-memory implementations in :mod:`processors.adapters.memory` in a unit
test. Text generation has its own module, :mod:`processors.generation`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.events import AdapterRef, AnswerDone, Citation, Passage, PromptRef
from schemas.topics import Topic

if TYPE_CHECKING:
    from processors.guardrails.input_guard import InputGuardResult
    from processors.guardrails.policy import GuardPolicy
    from processors.query.context import Context

Vectors = npt.NDArray[np.float32]
SearchMode = Literal["hybrid", "dense", "bm25"]


class Embedder(Protocol):
    model: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Return one L2-normalized float32 row per text."""
        ...


class Reranker(Protocol):
    async def rerank(self, query: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        """The ``top_k`` most relevant passages, best first, with ``score`` set to the reranker's score."""
        ...


class Search(Protocol):
    async def search(
        self,
        tenant: str,
        query_text: str,
        query_vector: Sequence[float] | None,
        top_k: int = 20,
        mode: SearchMode = "hybrid",
    ) -> list[Passage]:
        """The tenant's ``top_k`` live passages for the query, best first (higher score is better)."""
        ...


class Guard(Protocol):
    async def check(self, text: str, policy: GuardPolicy) -> InputGuardResult:
        """The verdict on ``text`` and the text later stages may see (normalised, PII masked)."""
        ...


class PassageScreen(Protocol):
    async def screen(self, texts: Sequence[str], policy: GuardPolicy) -> list[str]:
        """Why each retrieved text must not reach the prompt ("" when it may), in the order given."""
        ...


class CachedAnswer(msgspec.Struct, kw_only=True):
    question: str
    text: str
    citations: list[Citation]
    model: str
    prompt_ref: PromptRef | None
    doc_ids: list[str]
    created_at: float
    # Where the cache indexed the entry (implementation-defined), so invalidation can find it.
    vector_set: str
    # The LoRA adapter that produced it (entries written before adapters existed decode with None).
    adapter: AdapterRef | None = None

    @classmethod
    def of(cls, question: str, answer: AnswerDone, vector_set: str) -> CachedAnswer:
        """What is kept of a complete answer; ``doc_ids`` are the documents it cited (a change drops the entry)."""
        return cls(
            question=question,
            text=answer.text,
            citations=answer.citations,
            model=answer.model,
            prompt_ref=answer.prompt_ref,
            doc_ids=sorted({citation.doc_id for citation in answer.citations}),
            created_at=time.time(),
            vector_set=vector_set,
            adapter=answer.adapter,
        )


class CacheHit(msgspec.Struct, kw_only=True):
    entry_id: str
    similarity: float
    answer: CachedAnswer


class AnswerCache(Protocol):
    """Answers reused for questions that mean the same; scoped by tenant and prompt version."""

    async def lookup(
        self, tenant: str, prompt_key: str, question: str, vector: Vectors | Sequence[float]
    ) -> CacheHit | None: ...

    async def store(
        self, tenant: str, prompt_key: str, question: str, vector: Vectors | Sequence[float], answer: AnswerDone
    ) -> str | None: ...

    async def invalidate_documents(self, tenant: str, doc_ids: Sequence[str]) -> int:
        """Drop every entry that cited any of ``doc_ids``; returns how many were dropped."""
        ...


class PromptProvider(Protocol):
    def render_rag(self, question: str, context: Context, version: str | None = None) -> tuple[str, PromptRef]:
        """The full model input for ``question`` over ``context``, and which prompt version produced it."""
        ...


class ModelChooser(Protocol):
    def choose(self, question: str, passages: Sequence[Passage], tenant: str, requested: str | None) -> str:
        """The model for this query."""
        ...


class EventSink(Protocol):
    """Where a processor's output events go: Kafka in the worker, a list in a unit test."""

    async def emit(self, topic: Topic, key: str | bytes | None, event: msgspec.Struct) -> None: ...

    async def emit_many(self, topic: Topic, keyed: Iterable[tuple[str | bytes | None, msgspec.Struct]]) -> None:
        """Every event of a fan-out (one document's chunks), acknowledged together."""
        ...
