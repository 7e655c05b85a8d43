"""The ingest processor on the real Triton, Milvus and Redis of the test stack, without Kafka.

The processor's output events go to an in-memory sink, and the test moves them from stage to stage the way the
worker's agents do (documents -> chunks -> embedded -> indexed).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.doc_states import DocStates
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.memory import MemorySink
from processors.adapters.milvus import MilvusIndex, collection_name, milvus_client
from processors.adapters.triton import TritonClient, TritonError
from processors.ingest.processor import IngestProcessor
from processors.protocols import Vectors
from schemas.events import Chunk, DocumentIndexed, DocumentUpsert, EmbeddedChunk
from schemas.topics import Topic

pytestmark = pytest.mark.services

# Long enough for several chunks: the failure must come after some of them are written.
MANUAL = "# Tidewater pump manual\n\n" + "\n\n".join(
    f"## Section {i}\n\nThe tidewater pump's valve number {i} is serviced every {i + 2} weeks; its seal is "
    f"replaced with part TW-{1000 + i}, and the torque on its {i + 4} bolts is checked with a calibrated wrench. "
    "Log the service in the maintenance book and test the pump at low pressure before restarting the line."
    for i in range(24)
)


class FailingAfter:
    """The real Triton embedder, made to fail once it has embedded ``good`` texts: a Triton error part-way
    through a document, which the real server cannot be made to produce on demand."""

    def __init__(self, inner: TritonEmbedder, good: int) -> None:
        self.inner = inner
        self.model = inner.model
        self.dim = inner.dim
        self.left = good

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) > self.left:
            raise TritonError("embedder: UNAVAILABLE (injected after some chunks)", retryable=True)
        self.left -= len(texts)
        return await self.inner.embed(texts)


@pytest.fixture
async def services(stack: Stack, stack_settings: Settings) -> AsyncIterator[tuple[MilvusIndex, TritonClient]]:
    redis = aioredis.Redis.from_url(stack_settings.redis_address)
    milvus = milvus_client(stack_settings.milvus_address)
    triton = TritonClient(stack_settings.triton_address, timeout_s=60)
    states = DocStates(redis, prefix=f"t{uuid.uuid4().hex[:6]}")
    index = MilvusIndex(milvus, stack_settings.milvus_address, states, collection=collection_name("ragstream"))
    yield index, triton
    await triton.close()
    await milvus.close()
    await redis.aclose()


async def run_document(processor: IngestProcessor, sink: MemorySink, event: DocumentUpsert) -> None:
    """Every stage in turn, one chunk at a time, continuing past failures like the agents do."""
    await processor.handle_document(event)
    for chunk in list(sink.on(Topic.CHUNKS)):
        assert isinstance(chunk, Chunk)
        try:
            await processor.handle_chunk(chunk)
        except TritonError:
            continue  # the stage writes its dead letter; the next chunk is processed
    for embedded in list(sink.on(Topic.EMBEDDED)):
        assert isinstance(embedded, EmbeddedChunk)
        await processor.handle_embedded(embedded)


def acks(sink: MemorySink) -> list[DocumentIndexed]:
    return [ack for ack in sink.on(Topic.DOCUMENT_ACKS) if isinstance(ack, DocumentIndexed)]


async def test_a_document_failing_part_way_is_rolled_back_and_a_rerun_indexes_it(
    services: tuple[MilvusIndex, TritonClient],
) -> None:
    index, triton = services
    tenant, doc_id = f"t{uuid.uuid4().hex[:10]}", "pump/manual.md"
    first = DocumentUpsert(tenant=tenant, doc_id=doc_id, version=1, content=MANUAL, content_type="text/markdown")

    sink = MemorySink()
    flaky = IngestProcessor(
        states=index.states, index=index, embedder=FailingAfter(TritonEmbedder(triton), good=6), sink=sink,
        embed_batch=1,
    )  # fmt: skip
    await run_document(flaky, sink, first)
    chunks = len(sink.on(Topic.CHUNKS))
    embedded = len(sink.on(Topic.EMBEDDED))
    assert chunks > 10 and 0 < embedded < chunks  # some chunks made it to Milvus before the failure
    failed = acks(sink)
    assert failed and {a.status for a in failed} == {"failed"} and "injected" in failed[0].error

    state = await index.states.get(tenant, doc_id)
    assert state.live == 0 and state.failed == 1 and state.next_version == 2
    assert await index.chunk_indexes(tenant, doc_id, 1) == set()  # no row of the failed version is left
    assert flaky.writer._progress == {}  # nothing left for the recovery sweep to chase
    vector = (await TritonEmbedder(triton).embed(["tidewater pump valve seal part"]))[0].tolist()
    assert not await index.search(tenant, "tidewater pump valve seal part", vector, top_k=5)
    await flaky.close()

    sink = MemorySink()
    healthy = IngestProcessor(states=index.states, index=index, embedder=TritonEmbedder(triton), sink=sink)
    second = DocumentUpsert(tenant=tenant, doc_id=doc_id, version=state.next_version, content=MANUAL,
                            content_type="text/markdown")  # fmt: skip
    await run_document(healthy, sink, second)
    [indexed] = acks(sink)
    assert (indexed.status, indexed.version, indexed.chunks) == ("indexed", 2, chunks)
    hits = await index.search(tenant, "tidewater pump valve seal part", vector, top_k=5)
    assert hits and all(hit.doc_id == doc_id for hit in hits)
    await healthy.close()
