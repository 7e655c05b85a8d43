"""Ingestion agents: documents -> chunks -> embedded -> indexed, each a :class:`~streams.worker.stage.Stage` around
one method of :class:`~processors.ingest.processor.IngestProcessor` (which holds the logic).

- ``ingest-chunk`` (documents topic, concurrency 1: a document's upserts and deletes stay in order).
- ``ingest-embed`` (chunks topic) runs ``embed_concurrency`` handlers whose texts a micro-batcher coalesces into
  cached Triton calls.
- ``ingest-index`` (embedded topic) runs ``index_concurrency`` handlers feeding the worker's one index writer.

Batch sizes and concurrency defaults come from benchmarks/ingest.
"""

from __future__ import annotations

from typing import Any

import faust

from infra.settings import Settings
from processors.ingest.embedding import CachedEmbedder
from processors.ingest.processor import EMBED_BATCH, INDEX_BATCH, IngestProcessor
from processors.ingest.tokenizer import MODEL_NAME
from processors.ingest.writer import DocDone
from schemas.events import Chunk, DocumentEvent, EmbeddedChunk
from schemas.topics import Topic
from streams import metrics, telemetry
from streams.worker.app import TopicTable
from streams.worker.outbox import Outbox
from streams.worker.resources import Resources
from streams.worker.stage import Stage, StageContext

EMBED_CONCURRENCY = 128
INDEX_CONCURRENCY = 512

_cache_lookups = telemetry.meter.create_counter(
    "ragstream_embedding_cache_lookups", description="Embedding cache lookups by result (hit/miss)"
)


def _count_lookups(hits: int, misses: int) -> None:
    if hits:
        _cache_lookups.add(hits, {"result": "hit"})
    if misses:
        _cache_lookups.add(misses, {"result": "miss"})


def _count_done(done: DocDone) -> None:
    metrics.ingest_documents.add(1, {"status": done.status})
    if done.status == "indexed":
        metrics.ingest_chunks.add(done.chunks)


def ingest_processor(
    settings: Settings, resources: Resources, outbox: Outbox, *, embed_batch: int, index_batch: int
) -> IngestProcessor:
    embedder = CachedEmbedder(
        resources.bulk_embedder, resources.redis, prefix=f"{settings.topic_prefix}:emb",
        counters=_count_lookups, model_id=MODEL_NAME,
    )  # fmt: skip
    return IngestProcessor(
        states=resources.states, index=resources.index, embedder=embedder, sink=outbox,
        embed_batch=embed_batch, index_batch=index_batch, on_done=_count_done,
    )  # fmt: skip


def register(
    app: faust.App,
    settings: Settings,
    topics: TopicTable,
    outbox: Outbox,
    resources: Resources,
    *,
    embed_concurrency: int = EMBED_CONCURRENCY,
    index_concurrency: int = INDEX_CONCURRENCY,
    embed_batch: int = EMBED_BATCH,
    index_batch: int = INDEX_BATCH,
) -> dict[str, Stage[Any]]:
    processor = ingest_processor(settings, resources, outbox, embed_batch=embed_batch, index_batch=index_batch)

    async def on_document(event: DocumentEvent, ctx: StageContext) -> None:
        await processor.handle_document(event)

    async def on_chunk(chunk: Chunk, ctx: StageContext) -> None:
        await processor.handle_chunk(chunk)

    async def on_embedded(event: EmbeddedChunk, ctx: StageContext) -> None:
        await processor.handle_embedded(event)

    stages: dict[str, Stage[Any]] = {
        "ingest-chunk": Stage("ingest-chunk", DocumentEvent, on_document, outbox),
        "ingest-embed": Stage("ingest-embed", Chunk, on_chunk, outbox),
        "ingest-index": Stage("ingest-index", EmbeddedChunk, on_embedded, outbox),
    }
    app.agent(topics[Topic.DOCUMENTS], name="ingest-chunk")(stages["ingest-chunk"].run)
    app.agent(topics[Topic.CHUNKS], name="ingest-embed", concurrency=embed_concurrency)(stages["ingest-embed"].run)
    app.agent(topics[Topic.EMBEDDED], name="ingest-index", concurrency=index_concurrency)(stages["ingest-index"].run)

    async def close_processor(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await processor.close()

    app.on_before_shutdown.connect(close_processor)
    return stages
