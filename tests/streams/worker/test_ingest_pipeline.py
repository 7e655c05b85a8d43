"""Document ingestion end to end: ``ragstream ingest`` -> Kafka -> worker agents -> Triton -> Milvus -> search.

Runs on the session stack (real Kafka, Redis, Milvus Lite server, Triton) with a real worker subprocess. Each test
uses its own tenant, so tests do not see each other's documents.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.settings import Settings
from processors.adapters.doc_states import DocStates
from processors.adapters.embedder import TritonEmbedder
from processors.adapters.milvus import MilvusIndex, collection_name, milvus_client
from processors.adapters.triton import TritonClient
from processors.ingest.chunking import chunk_id
from schemas.codec import encode
from schemas.events import CacheInvalidation, DeadLetter, DocumentUpsert
from schemas.topics import Topic
from streams.clients import ingest as ingest_client
from tests.conftest import WorkerProcess

# Generous limits: on a shared 2-core machine the CPU embedder can be several times slower than when idle.
pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

PYDOCS = Path("/usr/share/doc/python3.11/html")
PAGES = ["library/asyncio-task.html", "tutorial/introduction.html", "library/bisect.html"]


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A few real pages of the Python 3.11 docs (Debian's python3.11-doc) plus a Markdown file."""
    if not (PYDOCS / PAGES[0]).exists():
        pytest.fail("the Python docs corpus is missing: apt-get install -y python3.11-doc")
    root = tmp_path / "docs"
    for page in PAGES:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PYDOCS / page, root / page)
    (root / "notes.md").write_text("# Notes\n\nThe zebra-crossing protocol moves packets across the river.\n")
    return root


class Tools:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = aioredis.Redis.from_url(settings.redis_address)
        self.milvus = milvus_client(settings.milvus_address)
        self.triton = TritonClient(settings.triton_address, timeout_s=60)
        self.states = DocStates(self.redis, prefix=settings.topic_prefix)
        self.index = MilvusIndex(self.milvus, settings.milvus_address, self.states,
                                 collection=collection_name(settings.topic_prefix))  # fmt: skip

    async def vector(self, text: str) -> list[float]:
        return [float(x) for x in (await TritonEmbedder(self.triton).embed([text]))[0]]

    async def cache_stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(f"{self.settings.topic_prefix}:emb:stats")
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.triton.close()
        await self.milvus.close()
        await self.redis.aclose()


@pytest.fixture
async def tools(worker: WorkerProcess, stack_settings: Settings) -> AsyncIterator[Tools]:
    t = Tools(stack_settings)
    yield t
    await t.close()


async def find_events(settings: Settings, topic: Topic, decode: Callable[[bytes], Any],
                      match: Callable[[Any], bool], *, count: int = 1, timeout_s: float = 60) -> list[Any]:  # fmt: skip
    """Read a topic from the beginning until ``count`` decoded events match."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic), bootstrap_servers=settings.kafka_servers, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50,
    )  # fmt: skip
    found: list[Any] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        event = decode(record.value)
                    except Exception:
                        continue
                    if match(event):
                        found.append(event)
    finally:
        await consumer.stop()
    return found


def _dead(value: bytes) -> DeadLetter:
    from schemas.codec import EventDecoder

    return EventDecoder(DeadLetter).decode(value)


def _invalidation(value: bytes) -> CacheInvalidation:
    from schemas.codec import EventDecoder

    return EventDecoder(CacheInvalidation).decode(value)


async def test_ingest_then_search_finds_the_chunk(tools: Tools, corpus: Path, stack_settings: Settings) -> None:
    tenant = _tenant()
    report = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=600, progress=False)
    assert report.ok, report.errors
    assert report.indexed == 4 and report.chunks > 40

    question = "How do I put a timeout on waiting for a coroutine?"
    hits = await tools.index.search(tenant, question, await tools.vector(question), top_k=5)
    assert hits, "hybrid search found nothing"
    top = hits[0]
    assert top.doc_id == "library/asyncio-task.html"
    assert top.heading_path[0] == "Coroutines and Tasks"
    assert "timeout" in top.text.lower()
    assert top.char_end > top.char_start and top.source_uri.startswith("file://")

    bm25 = await tools.index.search(tenant, "zebra-crossing protocol", None, top_k=3, mode="bm25")
    assert bm25 and bm25[0].doc_id == "notes.md" and "zebra" in bm25[0].text
    assert await tools.index.search(_tenant(), question, await tools.vector(question)) == []  # other tenant


async def test_reingest_unchanged_does_no_work_and_force_hits_the_cache(
    tools: Tools, corpus: Path, stack_settings: Settings
) -> None:
    tenant = _tenant()
    first = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=600, progress=False)
    assert first.ok and first.indexed == 4

    again = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=60, progress=False)
    assert again.ok and again.skipped == 4 and again.sent == 0  # content hash: nothing produced at all

    before = await tools.cache_stats()
    forced = await ingest_client.ingest(stack_settings, [corpus], tenant, force=True, timeout_s=600, progress=False)
    after = await tools.cache_stats()
    assert forced.ok and forced.indexed == 4 and forced.chunks == first.chunks
    assert after.get("misses", 0) == before.get("misses", 0), "re-indexing unchanged text ran the embedder"
    assert after.get("hits", 0) - before.get("hits", 0) >= first.chunks


async def test_update_replaces_without_a_gap(tools: Tools, tmp_path: Path, stack_settings: Settings) -> None:
    tenant = _tenant()
    doc = tmp_path / "upd" / "guide.md"
    doc.parent.mkdir()
    sections = [f"## Part {i}\n\n" + f"Sentence about topic {i} and the lighthouse keeper. " * 30 for i in range(5)]
    doc.write_text("# Guide\n\n" + "\n\n".join(sections))
    first = await ingest_client.ingest(stack_settings, [doc.parent], tenant, timeout_s=400, progress=False)
    assert first.ok and first.indexed == 1
    ids1 = frozenset(chunk_id(tenant, "guide.md", 1, i) for i in range(first.chunks))

    vector = await tools.vector("lighthouse keeper")
    seen: list[frozenset[str]] = []
    stop = asyncio.Event()

    async def searcher() -> None:
        while not stop.is_set():
            hits = await tools.index.search(tenant, "lighthouse keeper", vector, top_k=100, mode="hybrid")
            seen.append(frozenset(p.chunk_id for p in hits))

    task = asyncio.create_task(searcher())
    await asyncio.sleep(0.3)
    doc.write_text("# Guide\n\n" + "\n\n".join(s.replace("lighthouse", "harbour lighthouse") for s in sections * 2))
    second = await ingest_client.ingest(stack_settings, [doc.parent], tenant, timeout_s=400, progress=False)
    await asyncio.sleep(0.3)
    stop.set()
    await task
    assert second.ok and second.indexed == 1
    ids2 = frozenset(chunk_id(tenant, "guide.md", 2, i) for i in range(second.chunks))
    assert len(seen) > 5
    bad = [len(s) for s in seen if s not in (ids1, ids2)]
    assert not bad, f"searches saw a gap or a mix of versions: sizes {bad}"
    assert seen[0] == ids1 and seen[-1] == ids2
    assert await tools.index.count(tenant, "guide.md", 1) == 0

    invalidations = await find_events(stack_settings, Topic.CACHE_INVALIDATIONS, _invalidation,
                                      lambda e: e.tenant == tenant and e.doc_ids == ["guide.md"])  # fmt: skip
    assert invalidations and "replaced" in invalidations[0].reason


async def test_delete_removes_every_chunk(tools: Tools, corpus: Path, stack_settings: Settings) -> None:
    tenant = _tenant()
    report = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=600, progress=False)
    assert report.ok
    assert await tools.index.count(tenant, "notes.md") > 0

    deleted = await ingest_client.delete(stack_settings, tenant, ["notes.md"])
    assert deleted.deleted == 1 and deleted.ok
    assert await tools.index.count(tenant, "notes.md") == 0
    assert await tools.index.search(tenant, "zebra-crossing protocol", None, mode="bm25") == []
    assert await tools.index.count(tenant, "library/bisect.html") > 0  # the others stay
    invalidations = await find_events(stack_settings, Topic.CACHE_INVALIDATIONS, _invalidation,
                                      lambda e: e.tenant == tenant and e.doc_ids == ["notes.md"])  # fmt: skip
    assert invalidations and invalidations[0].reason == "deleted"
    # ingesting the file again brings it back as a new version
    again = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=600, progress=False)
    assert again.indexed == 1 and again.skipped == 3
    assert len(await tools.index.search(tenant, "zebra-crossing protocol", None, mode="bm25")) == 1


async def test_corrupt_files_and_malformed_events_reach_the_dead_letter_topic(
    tools: Tools, tmp_path: Path, stack_settings: Settings
) -> None:
    tenant = _tenant()
    root = tmp_path / "bad"
    root.mkdir()
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n this is not a pdf at all \x00\x01")
    (root / "junk.txt").write_bytes(bytes(range(256)) * 4)  # neither UTF-8 nor text in Windows-1252
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))  # not UTF-8, but text: indexed
    (root / "fine.txt").write_text("A perfectly fine document about walruses.")
    report = await ingest_client.ingest(stack_settings, [root], tenant, timeout_s=400, progress=False)
    assert report.indexed == 2 and report.failed == 2
    assert {doc for doc, _ in report.errors} == {"broken.pdf", "junk.txt"}

    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_servers)
    await producer.start()
    try:
        documents = stack_settings.topic(Topic.DOCUMENTS)
        await producer.send_and_wait(documents, b"\xc1 not msgpack", key=f"{tenant}/garbage".encode())
        invalid = DocumentUpsert(tenant=tenant, doc_id="", version=0, content="x")
        await producer.send_and_wait(documents, encode(invalid), key=f"{tenant}/invalid".encode())
    finally:
        await producer.stop()

    keys = {f"{tenant}/{name}".encode() for name in ("broken.pdf", "junk.txt", "garbage", "invalid")}
    letters = await find_events(stack_settings, Topic.DEAD_LETTERS, _dead, lambda e: e.key in keys, count=4)
    by_key = {letter.key.decode().split("/", 1)[1]: letter for letter in letters}
    assert set(by_key) == {"broken.pdf", "junk.txt", "garbage", "invalid"}
    assert all(letter.stage == "ingest-chunk" for letter in letters)
    assert "PDF" in by_key["broken.pdf"].reason
    assert "not text in any encoding" in by_key["junk.txt"].reason
    assert by_key["garbage"].error_type == "DecodeError"
    assert by_key["invalid"].error_type == "InvalidDocument"
    assert by_key["garbage"].value == b"\xc1 not msgpack"  # kept whole for replay


async def test_ragstream_ingest_command_waits_for_the_acks(
    tools: Tools, tmp_path: Path, stack_settings: Settings
) -> None:
    import sys

    from tests.conftest import settings_env

    tenant = _tenant()
    root = tmp_path / "cli"
    root.mkdir()
    (root / "a.rst").write_text("Title\n=====\n\nThe capybara is the largest living rodent.\n")
    args = [sys.executable, "-m", "streams", "ingest", str(root), "--tenant", tenant, "--timeout", "400"]
    proc = await asyncio.create_subprocess_exec(
        *args, env=settings_env(stack_settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "1 indexed" in err.decode()
    hits = await tools.index.search(tenant, "largest rodent", None, mode="bm25")  # searchable when the command returns
    assert hits and hits[0].heading_path == ["Title"]
