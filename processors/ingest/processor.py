"""Ingestion as plain async code: documents -> chunks -> embedded chunks -> live index, and the acknowledgements.

The worker's three ingest agents each call one method here (:meth:`IngestProcessor.handle_document`,
:meth:`~IngestProcessor.handle_chunk`, :meth:`~IngestProcessor.handle_embedded`) and the processor emits what
follows through its :class:`~processors.protocols.EventSink`. It decides:

- an unchanged document (same content hash as its live version) is acknowledged ``unchanged`` without work;
- a new version is started in the document state, and a version superseded by a newer one, or a document deleted
  meanwhile, is acknowledged ``unchanged`` with the reason;
- a version goes live when the :class:`~processors.ingest.writer.IndexWriter` has all its chunks, which is
  acknowledged ``indexed`` (plus a cache invalidation when it replaced a live version);
- any failure is acknowledged ``failed`` with the reason (so ``ragstream ingest`` stops waiting) and re-raised, so
  the stage wrapper writes the dead letter; a version that failed part-way is rolled back (none of its rows stay
  searchable, its late chunks are dropped) and a re-run indexes the document as a new version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from processors.adapters.doc_states import DocStates, check_tenant
from processors.adapters.milvus import MilvusIndex
from processors.ingest.batching import MicroBatcher
from processors.ingest.chunking import Chunker, make_chunker
from processors.ingest.documents import build_chunks, content_hash, doc_key, embed_text, validate
from processors.ingest.writer import DocDone, IndexWriter
from processors.protocols import Embedder, EventSink
from schemas.events import (
    CacheInvalidation,
    Chunk,
    DocumentDelete,
    DocumentEvent,
    DocumentIndexed,
    DocumentUpsert,
    EmbeddedChunk,
)
from schemas.topics import Topic

EMBED_BATCH = 32
EMBED_FLUSHES = 3  # one more than the CPU embedder's two instances: a freed instance finds the next batch queued
INDEX_BATCH = 256


class IngestProcessor:
    """One per worker: it owns the worker's single :class:`IndexWriter` and its embedding micro-batcher."""

    def __init__(
        self,
        *,
        states: DocStates,
        index: MilvusIndex,
        embedder: Embedder,
        sink: EventSink,
        chunker: Callable[[], Chunker] = lambda: make_chunker("token"),
        embed_batch: int = EMBED_BATCH,
        index_batch: int = INDEX_BATCH,
        on_done: Callable[[DocDone], None] | None = None,
    ) -> None:
        self.states = states
        self.index = index
        self.embedder = embedder
        self.sink = sink
        self.on_done = on_done
        self.writer = IndexWriter(index, states, self.acknowledge, max_batch=index_batch)

        async def flush(texts: list[str]) -> list[Any]:
            return list(await embedder.embed(texts))

        self.embed_batcher: MicroBatcher[str, Any] = MicroBatcher(
            flush, max_batch=embed_batch, max_wait_s=0.01, max_flushes=EMBED_FLUSHES
        )
        self._make_chunker = chunker
        self._chunker: Chunker | None = None
        self._chunker_lock = asyncio.Lock()

    async def chunker(self) -> Chunker:
        """Built on first use, in a thread: loading the tokenizer takes a moment."""
        if self._chunker is None:
            async with self._chunker_lock:
                if self._chunker is None:
                    self._chunker = await asyncio.to_thread(self._make_chunker)
        return self._chunker

    # --- the three stages -----------------------------------------------------------------------------------

    async def handle_document(self, event: DocumentEvent) -> None:
        """An upsert becomes chunks (or an ``unchanged`` ack); a delete removes every version of the document."""
        version = event.version if isinstance(event, DocumentUpsert) else 0
        try:
            if isinstance(event, DocumentDelete):
                check_tenant(event.tenant)
                await self.acknowledge(await self.writer.delete(event.tenant, event.doc_id, event.event_id))
            else:
                await self._upsert(event)
        except Exception as exc:
            await self.fail(event.tenant, event.doc_id, version, event.event_id, exc)
            raise

    async def _upsert(self, event: DocumentUpsert) -> None:
        validate(event)
        digest = content_hash(event)
        state = await self.states.get(event.tenant, event.doc_id)
        if state.live > 0 and state.hash == digest and not event.reindex:
            await self.acknowledge(
                DocDone(event.tenant, event.doc_id, state.live, "unchanged", state.chunks, event.event_id)
            )
            return
        newest = await self.states.begin(event.tenant, event.doc_id, event.version)
        if newest != event.version:
            why = "document deleted" if newest < 0 else f"superseded by version {newest}"
            await self.acknowledge(
                DocDone(event.tenant, event.doc_id, event.version, "unchanged", 0, event.event_id, error=why)
            )
            return
        chunker = await self.chunker()
        chunks = await asyncio.to_thread(build_chunks, event, chunker, digest)
        if not chunks:
            done = await self.writer.activate_empty(event.tenant, event.doc_id, event.version, digest,
                                                    event.event_id)  # fmt: skip
            await self.acknowledge(done)
            return
        key = doc_key(event.tenant, event.doc_id)
        await self.sink.emit_many(Topic.CHUNKS, ((key, chunk) for chunk in chunks))

    async def handle_chunk(self, chunk: Chunk) -> None:
        """Embed one chunk (coalesced with concurrent ones into a batch) and pass it on to indexing."""
        try:
            vector = await self.embed_batcher.submit(embed_text(chunk))
            embedded = EmbeddedChunk(chunk=chunk, embedding=vector.tolist(), model=self.embedder.model)
            await self.sink.emit(Topic.EMBEDDED, doc_key(chunk.tenant, chunk.doc_id), embedded)
        except Exception as exc:
            await self.fail(chunk.tenant, chunk.doc_id, chunk.version, chunk.document_event_id, exc)
            raise

    async def handle_embedded(self, event: EmbeddedChunk) -> None:
        """Write one embedded chunk; returns once it is in Milvus (and its version live, if it was the last)."""
        chunk = event.chunk
        try:
            if len(event.embedding) != self.index.dim:
                raise ValueError(f"embedding has {len(event.embedding)} dimensions, the index {self.index.dim}")
            await self.writer.write(event)
        except Exception as exc:
            await self.fail(chunk.tenant, chunk.doc_id, chunk.version, chunk.document_event_id, exc)
            raise

    # --- outcomes -------------------------------------------------------------------------------------------

    async def acknowledge(self, done: DocDone) -> None:
        key = doc_key(done.tenant, done.doc_id)
        ack = DocumentIndexed(
            tenant=done.tenant, doc_id=done.doc_id, version=done.version, status=done.status,
            chunks=done.chunks, error=done.error, event_ref=done.event_ref,
        )  # fmt: skip
        await self.sink.emit(Topic.DOCUMENT_ACKS, key, ack)
        if self.on_done is not None:
            self.on_done(done)
        if done.status == "deleted" or (done.status == "indexed" and done.replaced > 0):
            reason = "deleted" if done.status == "deleted" else f"version {done.replaced} replaced by {done.version}"
            await self.sink.emit(
                Topic.CACHE_INVALIDATIONS, done.tenant,
                CacheInvalidation(tenant=done.tenant, doc_ids=[done.doc_id], reason=reason),
            )  # fmt: skip

    async def fail(self, tenant: str, doc_id: str, version: int, event_ref: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        if version > 0:
            try:
                await self.writer.abandon(tenant, doc_id, version)
            except Exception as rollback_error:  # the ack below still tells the client; the next re-run cleans up
                reason += f" (rollback failed: {type(rollback_error).__name__}: {rollback_error})"[:500]
        await self.acknowledge(DocDone(tenant, doc_id, version, "failed", 0, event_ref, error=reason))

    async def close(self) -> None:
        await self.writer.close()
