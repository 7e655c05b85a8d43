"""The Milvus index on the real stack: a version swap has no gap, delete removes everything, search modes work.

The swap test writes the new version slowly, in several batches, while a searcher queries in a tight loop: every
answer must be exactly the old version's chunks or exactly the new version's, never none and never a mix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis

from infra.services.milvus import Milvus
from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.doc_states import DocStates
from processors.adapters.milvus import MilvusIndex, collection_name, milvus_client
from processors.ingest.chunking import chunk_id
from processors.ingest.writer import DocDone, IndexWriter
from processors.protocols import SearchMode
from schemas.events import Chunk, EmbeddedChunk
from tests.conftest import isolated_settings

pytestmark = pytest.mark.services

DIM = 384


def _vector(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return [float(x) for x in v / np.linalg.norm(v)]


def _chunks(tenant: str, doc_id: str, version: int, count: int, word: str) -> list[EmbeddedChunk]:
    return [
        EmbeddedChunk(
            chunk=Chunk(
                chunk_id=chunk_id(tenant, doc_id, version, i),
                tenant=tenant,
                doc_id=doc_id,
                version=version,
                index=i,
                text=f"{word} chunk {i} of version {version}",
                heading_path=["Doc", f"S{i}"],
                char_start=i * 10,
                char_end=i * 10 + 9,
                total=count,
                content_hash=f"h{version}",
            ),
            embedding=_vector(1000 * version + i),
            model="test",
        )
        for i in range(count)
    ]


@pytest.fixture
async def parts(stack: Stack, stack_settings: Settings) -> AsyncIterator[tuple[MilvusIndex, DocStates, list[DocDone]]]:
    redis = aioredis.Redis.from_url(stack_settings.redis_address)
    client = milvus_client(stack_settings.milvus_address)
    states = DocStates(redis, prefix="itest")
    index = MilvusIndex(client, stack_settings.milvus_address, states, collection=collection_name("itest"))
    done: list[DocDone] = []
    yield index, states, done
    await client.close()
    await redis.aclose()


async def _sealed(writer: IndexWriter, within_s: float) -> None:
    """Wait until the writer has sealed at least once, or ``within_s`` passed (the caller asserts what it expects)."""
    for _ in range(round(within_s / 0.1)):
        if writer.seals:
            return
        await asyncio.sleep(0.1)


async def test_version_swap_has_no_gap_and_no_duplicates(parts: tuple[MilvusIndex, DocStates, list[DocDone]]) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(index, states, record, max_batch=4, max_wait_s=0.001)
    tenant, doc = f"t{uuid.uuid4().hex[:8]}", "guide.md"
    v1, v2 = _chunks(tenant, doc, 1, 6, "alpha"), _chunks(tenant, doc, 2, 9, "beta")
    ids1 = {e.chunk.chunk_id for e in v1}
    ids2 = {e.chunk.chunk_id for e in v2}
    await states.begin(tenant, doc, 1)
    await asyncio.gather(*(writer.write(e) for e in v1))
    assert done[-1].status == "indexed" and done[-1].chunks == 6

    seen: list[frozenset[str]] = []
    stop = asyncio.Event()

    async def searcher() -> None:
        while not stop.is_set():
            for mode in ("dense", "hybrid"):
                hits = await index.search(tenant, "chunk version", _vector(1000), top_k=50, mode=mode)
                seen.append(frozenset(p.chunk_id for p in hits))

    task = asyncio.create_task(searcher())
    await asyncio.sleep(0.2)
    await states.begin(tenant, doc, 2)
    for start in range(0, len(v2), 3):  # the new version arrives in pieces, as embeddings finish
        await asyncio.gather(*(writer.write(e) for e in v2[start : start + 3]))
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    stop.set()
    await task

    assert done[-1].status == "indexed" and done[-1].version == 2 and done[-1].replaced == 1
    assert seen and all(ids in (ids1, ids2) for ids in seen), [len(s) for s in seen if s not in (ids1, ids2)]
    assert seen[0] == ids1 and seen[-1] == ids2
    assert await index.count(tenant, doc, 1) == 0  # old rows removed after the flip
    assert await index.count(tenant, doc) == 9


async def test_delete_removes_all_versions(parts: tuple[MilvusIndex, DocStates, list[DocDone]]) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(index, states, record, max_batch=16)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await states.begin(tenant, "a", 1)
    await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "a", 1, 5, "gamma")))
    await states.begin(tenant, "b", 1)
    await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "b", 1, 3, "delta")))
    assert len(await index.search(tenant, "gamma", None, top_k=20, mode="bm25")) == 5

    deleted = await writer.delete(tenant, "a")
    assert deleted.status == "deleted"
    assert await index.count(tenant, "a") == 0
    assert await index.search(tenant, "gamma", None, top_k=20, mode="bm25") == []
    remaining = await index.search(tenant, "delta", _vector(1000), top_k=20, mode="hybrid")
    assert {p.doc_id for p in remaining} == {"b"}
    # a late chunk of the deleted document does not bring it back
    await states.begin(tenant, "a", 1)
    await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "a", 1, 5, "gamma")))
    assert await index.count(tenant, "a") == 0


async def test_tenant_filter_is_always_applied(parts: tuple[MilvusIndex, DocStates, list[DocDone]]) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(index, states, record)
    mine, other = f"t{uuid.uuid4().hex[:8]}", f"u{uuid.uuid4().hex[:8]}"
    for tenant in (mine, other):
        await states.begin(tenant, "doc", 1)
        await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "doc", 1, 3, "epsilon")))
    modes: tuple[SearchMode, ...] = ("hybrid", "dense", "bm25")
    for mode in modes:
        hits = await index.search(mine, "epsilon", _vector(1000), top_k=20, mode=mode)
        assert len(hits) == 3
        assert {p.chunk_id for p in hits} == {chunk_id(mine, "doc", 1, i) for i in range(3)}
        assert hits[0].heading_path[0] == "Doc"
    with pytest.raises(ValueError):
        await index.search('x" or tenant != "', "epsilon", None, mode="bm25")


async def test_a_restarted_writer_completes_a_version_begun_before_the_restart(
    parts: tuple[MilvusIndex, DocStates, list[DocDone]],
) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    tenant = f"t{uuid.uuid4().hex[:8]}"
    chunks = _chunks(tenant, "r.md", 1, 5, "zeta")
    await states.begin(tenant, "r.md", 1)
    before = IndexWriter(index, states, record)
    await asyncio.gather(*(before.write(e) for e in chunks[:3]))  # then the worker "dies"
    await before.close()
    assert not done
    after = IndexWriter(index, states, record, recover_after_s=0.4)
    await asyncio.gather(*(after.write(e) for e in chunks[3:]))
    for _ in range(50):
        if done:
            break
        await asyncio.sleep(0.1)
    assert done and done[-1].status == "indexed" and done[-1].chunks == 5
    assert len(await index.search(tenant, "zeta", None, top_k=20, mode="bm25")) == 5
    await after.close()


async def test_searches_recover_after_milvus_restarts_without_a_new_client(
    stack: Stack, stack_settings: Settings, tmp_path: Path
) -> None:
    # A Milvus of its own: the shared one, had it failed to come back, would fail every test after this one.
    milvus = Milvus(isolated_settings(tmp_path / "own"))
    milvus.start()
    redis = aioredis.Redis.from_url(stack_settings.redis_address)
    client = milvus_client(milvus.address)
    states = DocStates(redis, prefix=f"irestart{uuid.uuid4().hex[:6]}")
    index = MilvusIndex(client, milvus.address, states, collection=collection_name("irestart"))
    done: list[DocDone] = []

    async def record(event: DocDone) -> None:
        done.append(event)

    try:
        writer = IndexWriter(index, states, record)
        tenant = f"t{uuid.uuid4().hex[:8]}"
        await states.begin(tenant, "doc", 1)
        await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "doc", 1, 3, "theta")))
        assert len(await index.search(tenant, "theta", _vector(1000), top_k=5)) == 3

        # Restarted from elsewhere while this loop keeps running, as a supervisor would; the server forgets which
        # collections were loaded.
        await asyncio.to_thread(milvus.stop)
        await asyncio.to_thread(milvus.start)
        hits = await index.search(tenant, "theta", _vector(1000), top_k=5)  # the same index object, as in a worker
        assert {p.chunk_id for p in hits} == {chunk_id(tenant, "doc", 1, i) for i in range(3)}
        # The writer's seal falls due 1 s after the writes, usually while Milvus is down: it retries until it lands.
        await _sealed(writer, within_s=15.0)
        assert writer.seals >= 1
        await writer.close()
    finally:
        await client.close()
        await redis.aclose()
        milvus.stop()


async def test_bm25_matches_content_words_of_a_question_and_a_question_of_function_words_alone(
    parts: tuple[MilvusIndex, DocStates, list[DocDone]],
) -> None:
    index, states, done = parts
    tenant = f"t{uuid.uuid4().hex[:8]}"

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(index, states, record)
    await states.begin(tenant, "doc", 1)
    chunks = _chunks(tenant, "doc", 1, 2, "omega")
    chunks[1] = msgspec.structs.replace(
        chunks[1], chunk=msgspec.structs.replace(chunks[1].chunk, text="what is it and how is it")
    )
    await asyncio.gather(*(writer.write(e) for e in chunks))
    await writer.close()
    # the function words of the question are dropped, its content word still finds the chunk
    hits = await index.search(tenant, "What is the omega of it?", None, top_k=5, mode="bm25")
    assert [p.chunk_id for p in hits][:1] == [chunk_id(tenant, "doc", 1, 0)]
    # a question made only of function words is searched whole, and finds the chunk that has them
    hits = await index.search(tenant, "how is it", None, top_k=5, mode="bm25")
    assert [p.chunk_id for p in hits][:1] == [chunk_id(tenant, "doc", 1, 1)]


async def test_workers_starting_together_all_create_or_load_the_new_collection_and_search_it(
    stack: Stack, stack_settings: Settings
) -> None:
    # Freshly started workers of a new deployment each find no collection and race to create, index and load it;
    # one that sees the collection before the other has indexed it must wait, not fail its first questions.
    redis = aioredis.Redis.from_url(stack_settings.redis_address)
    prefix = f"irace{uuid.uuid4().hex[:6]}"
    states = DocStates(redis, prefix=prefix)
    clients = [milvus_client(stack_settings.milvus_address) for _ in range(4)]
    indexes = [
        MilvusIndex(client, stack_settings.milvus_address, states, collection=collection_name(prefix))
        for client in clients
    ]
    try:
        await asyncio.gather(*(index.ensure_collection() for index in indexes))
        results = await asyncio.gather(*(index.search("acme", "anything", _vector(1), top_k=3) for index in indexes))
        assert results == [[], [], [], []]
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        await redis.aclose()


async def test_written_rows_are_sealed_into_segments_once_writes_pause(
    parts: tuple[MilvusIndex, DocStates, list[DocDone]], stack_settings: Settings
) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    def data_files() -> set[Path]:
        # Milvus Lite's segments: Parquet files under the collection's folder of its data dir
        home = Milvus(stack_settings).home
        return {p for p in home.rglob("data_*.parquet") if index.collection in p.parts}

    before = data_files()
    writer = IndexWriter(index, states, record, max_batch=8, seal_after_idle_s=0.3)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await states.begin(tenant, "sealed.md", 1)
    await asyncio.gather(*(writer.write(e) for e in _chunks(tenant, "sealed.md", 1, 12, "delta")))
    assert done[-1].status == "indexed"
    await _sealed(writer, within_s=5.0)
    assert writer.seals >= 1
    assert data_files() - before, "no new segment file after the seal"
    hits = await index.search(tenant, "delta chunk", _vector(1000), top_k=20, mode="hybrid")
    assert len(hits) == 12  # every row still found, now from the sealed segment
    await writer.close()


async def test_a_long_write_is_sealed_every_so_many_rows_without_waiting_for_a_pause(
    parts: tuple[MilvusIndex, DocStates, list[DocDone]],
) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(index, states, record, max_batch=4, seal_after_idle_s=60.0, seal_every_rows=8)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await states.begin(tenant, "long.md", 1)
    for chunk in _chunks(tenant, "long.md", 1, 20, "epsilon")[:10]:  # not complete: writing goes on
        await writer.write(chunk)
    await _sealed(writer, within_s=5.0)
    assert writer.seals == 1  # 8 rows were due long before the 60 s pause
    await writer.close()


async def test_a_slow_trickle_of_writes_is_sealed_once_its_oldest_row_is_old_enough(
    parts: tuple[MilvusIndex, DocStates, list[DocDone]],
) -> None:
    index, states, done = parts

    async def record(event: DocDone) -> None:
        done.append(event)

    writer = IndexWriter(
        index, states, record, max_batch=1, seal_after_idle_s=60.0, seal_every_rows=10_000, seal_max_age_s=0.5
    )
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await states.begin(tenant, "trickle.md", 1)
    for chunk in _chunks(tenant, "trickle.md", 1, 20, "eta")[:12]:  # one row every 0.1 s: never a pause, few rows
        await writer.write(chunk)
        await asyncio.sleep(0.1)
    await _sealed(writer, within_s=5.0)  # a seal begun during the writes may still be running
    assert writer.seals >= 1  # by age alone: the 60 s pause and the 10,000 rows were never reached
    await writer.close()
