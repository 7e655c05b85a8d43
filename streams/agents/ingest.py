"""Ingestion agents: documents -> chunks -> embedded -> indexed, each a :class:`~streams.stage.Stage`.

- ``ingest-chunk`` (documents topic, concurrency 1: a document's upserts and deletes stay in order) validates,
  skips unchanged content, loads and chunks (in a thread: parsing is CPU work) and emits Chunk events keyed
  ``tenant/doc_id``. Deletes are applied here, through the same single index writer.
- ``ingest-embed`` (chunks topic) runs ``embed_concurrency`` handlers whose texts a micro-batcher coalesces into
  cached Triton calls.
- ``ingest-index`` (embedded topic) runs ``index_concurrency`` handlers feeding the one :class:`IndexWriter`, which
  upserts in batches and emits a DocumentIndexed ack (keyed ``tenant/doc_id``) when a version goes live, plus a
  CacheInvalidation when a live version was replaced or deleted.

Any failure acks the document as ``failed`` (so ``ragstream ingest`` stops waiting) and re-raises, so the Stage
writes the dead letter with the reason. Batch sizes and concurrency defaults come from benchmarks/ingest.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from infra.settings import Settings
from processors.ingest.batching import MicroBatcher
from processors.ingest.chunking import Chunker, make_chunker
from processors.ingest.embedding import CachedEmbedder
from processors.ingest.index import MilvusIndex, use_index
from processors.ingest.pipeline import (
    DocDone,
    IndexWriter,
    build_chunks,
    content_hash,
    doc_key,
    embed_text,
    validate,
)
from processors.ingest.state import DocStates, check_tenant
from processors.ingest.tokenizer import MODEL_NAME
from schemas.events import (
    CacheInvalidation,
    Chunk,
    DocumentDelete,
    DocumentEvent,
    DocumentIndexed,
    DocumentUpsert,
    EmbeddedChunk,
)
from streams import telemetry
from streams.agents._resources import Resources
from streams.app import Topics
from streams.stage import Outbox, Stage, StageContext

EMBED_BATCH = 32
EMBED_FLUSHES = 3  # one more than the CPU embedder's two instances: a freed instance finds the next batch queued
EMBED_CONCURRENCY = 128
INDEX_BATCH = 256
INDEX_CONCURRENCY = 512

_cache_lookups = telemetry.meter.create_counter(
    "ragstream_embedding_cache_lookups", description="Embedding cache lookups by result (hit/miss)"
)
_chunks_indexed = telemetry.meter.create_counter("ragstream_chunks_indexed", description="Chunks made live")


def _count_lookups(hits: int, misses: int) -> None:
    if hits:
        _cache_lookups.add(hits, {"result": "hit"})
    if misses:
        _cache_lookups.add(misses, {"result": "miss"})


class IngestServices:
    """Everything the ingest agents share in one worker, built lazily on the worker's event loop."""

    def __init__(
        self,
        settings: Settings,
        resources: Resources,
        outbox: Outbox,
        *,
        embed_batch: int = EMBED_BATCH,
        index_batch: int = INDEX_BATCH,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.outbox = outbox
        self.embed_batch = embed_batch
        self.index_batch = index_batch
        self._states: DocStates | None = None
        self._index: MilvusIndex | None = None
        self._writer: IndexWriter | None = None
        self._embedder: CachedEmbedder | None = None
        self._embed_batcher: MicroBatcher[str, Any] | None = None
        self._chunker: Chunker | None = None
        self._chunker_lock = asyncio.Lock()

    @property
    def states(self) -> DocStates:
        return self.resources.states

    @property
    def index(self) -> MilvusIndex:
        """The process's one index, shared with the query path (one write lock, one loaded collection)."""
        if self._index is None:
            self._index = self.resources.index
            use_index(self._index)
        return self._index

    @property
    def writer(self) -> IndexWriter:
        if self._writer is None:
            self._writer = IndexWriter(self.index, self.states, self.acknowledge, max_batch=self.index_batch)
        return self._writer

    @property
    def embedder(self) -> CachedEmbedder:
        if self._embedder is None:
            self._embedder = CachedEmbedder(
                self.resources.embedder, self.resources.redis, prefix=f"{self.settings.topic_prefix}:emb",
                counters=_count_lookups, model_id=MODEL_NAME,
            )  # fmt: skip
        return self._embedder

    @property
    def embed_batcher(self) -> MicroBatcher[str, Any]:
        if self._embed_batcher is None:
            embedder = self.embedder

            async def flush(texts: list[str]) -> list[Any]:
                return list(await embedder.embed(texts))

            self._embed_batcher = MicroBatcher(
                flush, max_batch=self.embed_batch, max_wait_s=0.01, max_flushes=EMBED_FLUSHES
            )
        return self._embed_batcher

    async def chunker(self) -> Chunker:
        if self._chunker is None:
            async with self._chunker_lock:
                if self._chunker is None:
                    self._chunker = await asyncio.to_thread(make_chunker, "token")
        return self._chunker

    async def acknowledge(self, done: DocDone) -> None:
        key = doc_key(done.tenant, done.doc_id)
        ack = DocumentIndexed(
            tenant=done.tenant, doc_id=done.doc_id, version=done.version, status=done.status,
            chunks=done.chunks, error=done.error, event_ref=done.event_ref,
        )  # fmt: skip
        await self.outbox.emit("document_acks", key, ack)
        if done.status == "indexed":
            _chunks_indexed.add(done.chunks)
        if done.status == "deleted" or (done.status == "indexed" and done.replaced > 0):
            reason = "deleted" if done.status == "deleted" else f"version {done.replaced} replaced by {done.version}"
            await self.outbox.emit(
                "cache_invalidations", done.tenant,
                CacheInvalidation(tenant=done.tenant, doc_ids=[done.doc_id], reason=reason),
            )  # fmt: skip

    async def fail(self, tenant: str, doc_id: str, version: int, event_ref: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        await self.acknowledge(DocDone(tenant, doc_id, version, "failed", 0, event_ref, error=reason))


def register(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    outbox: Outbox,
    resources: Resources,
    *,
    embed_concurrency: int = EMBED_CONCURRENCY,
    index_concurrency: int = INDEX_CONCURRENCY,
    embed_batch: int = EMBED_BATCH,
    index_batch: int = INDEX_BATCH,
) -> dict[str, Stage[object]]:
    services = IngestServices(settings, resources, outbox, embed_batch=embed_batch, index_batch=index_batch)

    async def on_document(event: DocumentEvent, ctx: StageContext) -> None:
        key = doc_key(event.tenant, event.doc_id)
        version = event.version if isinstance(event, DocumentUpsert) else 0
        try:
            if isinstance(event, DocumentDelete):
                check_tenant(event.tenant)
                await services.acknowledge(await services.writer.delete(event.tenant, event.doc_id, event.event_id))
            else:
                await _upsert(event, key)
        except Exception as exc:
            await services.fail(event.tenant, event.doc_id, version, event.event_id, exc)
            raise

    async def _upsert(event: DocumentUpsert, key: str) -> None:
        validate(event)
        digest = content_hash(event)
        state = await services.states.get(event.tenant, event.doc_id)
        if state.live > 0 and state.hash == digest and not event.reindex:
            await services.acknowledge(
                DocDone(event.tenant, event.doc_id, state.live, "unchanged", state.chunks, event.event_id)
            )
            return
        newest = await services.states.begin(event.tenant, event.doc_id, event.version)
        if newest != event.version:
            why = "document deleted" if newest < 0 else f"superseded by version {newest}"
            await services.acknowledge(
                DocDone(event.tenant, event.doc_id, event.version, "unchanged", 0, event.event_id, error=why)
            )
            return
        chunker = await services.chunker()
        chunks = await asyncio.to_thread(build_chunks, event, chunker, digest)
        if not chunks:
            done = await services.writer.activate_empty(event.tenant, event.doc_id, event.version, digest,
                                                        event.event_id)  # fmt: skip
            await services.acknowledge(done)
            return
        await outbox.emit_many("chunks", ((key, chunk) for chunk in chunks))

    async def on_chunk(chunk: Chunk, ctx: StageContext) -> None:
        try:
            vector = await services.embed_batcher.submit(embed_text(chunk))
            embedded = EmbeddedChunk(chunk=chunk, embedding=vector.tolist(), model=services.embedder.model)
            await outbox.emit("embedded", doc_key(chunk.tenant, chunk.doc_id), embedded)
        except Exception as exc:
            await services.fail(chunk.tenant, chunk.doc_id, chunk.version, chunk.document_event_id, exc)
            raise

    async def on_embedded(event: EmbeddedChunk, ctx: StageContext) -> None:
        chunk = event.chunk
        try:
            if len(event.embedding) != services.index.dim:
                raise ValueError(f"embedding has {len(event.embedding)} dimensions, the index {services.index.dim}")
            await services.writer.write(event)
        except Exception as exc:
            await services.fail(chunk.tenant, chunk.doc_id, chunk.version, chunk.document_event_id, exc)
            raise

    stages: dict[str, Stage[object]] = {
        "ingest-chunk": Stage("ingest-chunk", DocumentEvent, on_document, outbox),  # type: ignore[arg-type]
        "ingest-embed": Stage("ingest-embed", Chunk, on_chunk, outbox),  # type: ignore[arg-type]
        "ingest-index": Stage("ingest-index", EmbeddedChunk, on_embedded, outbox),  # type: ignore[arg-type]
    }
    app.agent(topics["documents"], name="ingest-chunk")(stages["ingest-chunk"].run)
    app.agent(topics["chunks"], name="ingest-embed", concurrency=embed_concurrency)(stages["ingest-embed"].run)
    app.agent(topics["embedded"], name="ingest-index", concurrency=index_concurrency)(stages["ingest-index"].run)
    return stages
