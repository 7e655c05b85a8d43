"""The chunk collection in Milvus, its writes (serialized), and the retrieval ``search`` the query path uses.

One collection: ``chunk_id`` (primary key, deterministic, so replays overwrite), ``tenant`` (partition key),
``doc_id``, ``version``, ``chunk_index``, ``text`` (analyzed, feeding the BM25 function), ``source``, ``title``,
``metadata`` (JSON: heading path, char offsets, anchor), ``dense`` (384-d, COSINE, HNSW) and ``sparse`` (BM25).

Ownership: Milvus Lite runs as one ``milvus-lite server`` process that owns the data dir (``ragstream up``); workers,
the CLI and tests are gRPC clients. Lite wants writes to one collection serialized, so every write in a worker goes
through one lock held by :class:`MilvusIndex` (the indexer agent is the only writer); deployments with more than one
indexing worker point ``RAGSTREAM_MILVUS_URI`` at a real Milvus, where the same code needs no lock.

Search applies the tenant filter always and then keeps a hit only if its version is the document's live version
(:mod:`processors.adapters.doc_states`), which is what makes version swaps gapless. Ingestion writes the collection
and the query path searches it, both through :class:`MilvusIndex`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from processors.adapters.doc_states import DocStates, check_tenant
from processors.protocols import SearchMode
from processors.words import keyword_query
from schemas.events import EmbeddedChunk, Passage

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient

DIM = 384
MAX_TEXT = 16_384
OUTPUT_FIELDS = ["doc_id", "version", "chunk_index", "text", "source", "title", "metadata"]
RRF_K = 60
INDEXES = 2  # dense (HNSW) and sparse (BM25), created with the collection
# Searches retried when a version swap in the tenant overlapped them (a swap takes milliseconds; 3 is plenty).
SNAPSHOT_ATTEMPTS = 3

# pymilvus pings every 10 s even when idle, and keeps a closed client's shared channel; the Milvus Lite server
# answers with GOAWAY "too_many_pings", which drops in-flight RPCs. Every client here pings only during calls, rarely.
# After a call fails while Milvus restarts, gRPC waits out a growing backoff (up to 2 min) before it dials again and
# fails every call meanwhile with the old error; the channel pymilvus opens to recover shares that waiting connection
# unless the pool is its own. So each channel gets its own pool and redials within a second.
GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 300_000,
    "grpc.keepalive_permit_without_calls": False,
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1_000,
}


def milvus_client(address: str) -> AsyncMilvusClient:
    """An async Milvus client for any process (worker, eval, benchmarks), with the keepalive options above."""
    from pymilvus import AsyncMilvusClient

    return AsyncMilvusClient(uri=address, grpc_options=GRPC_OPTIONS)


def collection_name(prefix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{prefix}_chunks_v1")


def literal(value: str) -> str:
    """A Milvus filter string literal (this Milvus Lite has no filter templates)."""
    return json.dumps(value, ensure_ascii=False)


class MilvusIndex:
    """Writes and searches the chunk collection (a :class:`~processors.protocols.Search`); ``client`` is a pymilvus
    ``AsyncMilvusClient``."""

    def __init__(self, client: Any, uri: str, states: DocStates, *, collection: str, dim: int = DIM) -> None:
        self.client = client
        self.uri = uri
        self.states = states
        self.collection = collection
        self.dim = dim
        self.write_lock = asyncio.Lock()
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # BM25 gets the question without its function words (processors.words.keyword_query); off only to measure
        # what that changes.
        self.keyword_queries = True

    # --- schema -------------------------------------------------------------------------------------------------

    async def ensure_collection(self) -> None:
        """Create and load the collection once (sync client: Lite lacks the RPC the async create_index waits on)."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await asyncio.to_thread(self._create_sync)
                self._ready = True

    def _create_sync(self) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, grpc_options=GRPC_OPTIONS)
        try:
            if not client.has_collection(self.collection):
                try:
                    self._create_indexed(client)
                    return
                except Exception:
                    if not client.has_collection(self.collection):
                        raise
                    # Another worker of a new deployment created it first: load it once that one has indexed it.
            self._load_when_indexed(client)
        finally:
            client.close()

    def _load_when_indexed(self, client: Any, timeout_s: float = 60.0) -> None:
        """Load the collection once its indexes exist: a process that created it a moment ago may still be adding
        them, and loading before that fails."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if len(client.list_indexes(self.collection)) >= INDEXES:
                    client.load_collection(self.collection)
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"Milvus collection {self.collection} has no indexes after {timeout_s:.0f} s")
            time.sleep(0.2)

    def _create_indexed(self, client: Any) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("version", DataType.INT64)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True)
        schema.add_field("source", DataType.VARCHAR, max_length=2048)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index("dense", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 128})
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")

    async def _call(self, operation: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """One client call; when Milvus restarted and forgot the collection was loaded (searches then fail with
        "released" / "not loaded"), load it again and retry once, so a worker recovers without a restart."""
        try:
            return await operation(*args, **kwargs)
        except Exception as exc:
            if not _needs_reload(exc):
                raise
        self._ready = False
        await self.ensure_collection()
        return await operation(*args, **kwargs)

    # --- writes -------------------------------------------------------------------------------------------------

    @staticmethod
    def row(event: EmbeddedChunk) -> dict[str, Any]:
        chunk = event.chunk
        metadata: dict[str, Any] = dict(chunk.metadata)
        metadata.update(heading_path=chunk.heading_path, char_start=chunk.char_start, char_end=chunk.char_end)
        return {
            "chunk_id": chunk.chunk_id,
            "tenant": chunk.tenant,
            "doc_id": chunk.doc_id[:1024],
            "version": chunk.version,
            "chunk_index": chunk.index,
            "text": _clip(chunk.text, MAX_TEXT),
            "source": chunk.source_uri[:2048],
            "title": chunk.title[:1024],
            "metadata": metadata,
            "dense": event.embedding,
        }

    async def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.ensure_collection()
            async with self.write_lock:
                await self._call(self.client.upsert, self.collection, list(rows))

    async def flush(self) -> None:
        """Seal the rows written so far into indexed segments.

        Milvus Lite keeps unflushed rows in a memtable that every search and filtered query scans row by row, and
        flushes it on its own only at 128 MB, so a small knowledge base would never leave it: hybrid search over
        513 rows took 119 ms unflushed and 24 ms flushed (in-process, 2026-12-02). Real Milvus seals growing
        segments by itself; there this only does it sooner."""
        await self.ensure_collection()
        async with self.write_lock:
            await self._call(self.client.flush, self.collection)

    async def chunk_indexes(self, tenant: str, doc_id: str, version: int) -> set[int]:
        await self.ensure_collection()
        rows = await self._call(self.client.query,
            self.collection, filter=_doc_filter(tenant, doc_id, f"version == {int(version)}"),
            output_fields=["chunk_index"], limit=16_384,
        )  # fmt: skip
        return {int(row["chunk_index"]) for row in rows}

    async def count(self, tenant: str, doc_id: str, version: int | None = None) -> int:
        await self.ensure_collection()
        extra = f"version == {int(version)}" if version is not None else ""
        rows = await self._call(
            self.client.query, self.collection, filter=_doc_filter(tenant, doc_id, extra), output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def wait_searchable(
        self, tenant: str, doc_id: str, version: int, expected: int, timeout_s: float = 10
    ) -> None:
        """Return once a strong-consistency query sees all ``expected`` rows of the version."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            seen = await self.count(tenant, doc_id, version)
            if seen >= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tenant}/{doc_id} v{version}: {seen} of {expected} rows searchable")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def wait_searchable_many(self, expected: Sequence[tuple[str, str, int, int]], timeout_s: float = 10) -> None:
        """One strong-consistency query for many (tenant, doc_id, version, rows): returns once all rows are seen."""
        if not expected:
            return
        want = {(t, d, v): n for t, d, v, n in expected}
        expression = " or ".join(f"({_doc_filter(t, d, f'version == {int(v)}')})" for t, d, v in want)
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            await self.ensure_collection()
            fields = ["tenant", "doc_id", "version"]
            rows = await self._call(
                self.client.query,
                self.collection,
                filter=expression,
                output_fields=fields,
                limit=sum(want.values()) + 1,
            )
            seen: dict[tuple[str, str, int], int] = {}
            for row in rows:
                key = (row["tenant"], row["doc_id"], int(row["version"]))
                seen[key] = seen.get(key, 0) + 1
            missing = {k: n for k, n in want.items() if seen.get(k, 0) < n}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"rows not searchable after {timeout_s}s: {missing}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def delete_versions(self, targets: Sequence[tuple[str, str, Literal["<", "=="], int]]) -> None:
        """One delete for many ``(tenant, doc_id, op, version)``: ``<`` removes older versions, ``==`` one."""
        if targets:
            clauses = [f"({_doc_filter(t, d, f'version {op} {int(v)}')})" for t, d, op, v in targets]
            await self._delete(" or ".join(clauses))

    async def delete_older_versions(self, tenant: str, doc_id: str, keep: int) -> None:
        """Older only: rows of a newer version still being built must survive."""
        await self._delete(_doc_filter(tenant, doc_id, f"version < {int(keep)}"))

    async def delete_version(self, tenant: str, doc_id: str, version: int) -> None:
        await self._delete(_doc_filter(tenant, doc_id, f"version == {int(version)}"))

    async def delete_document(self, tenant: str, doc_id: str) -> None:
        await self._delete(_doc_filter(tenant, doc_id))

    async def _delete(self, expression: str) -> None:
        await self.ensure_collection()
        async with self.write_lock:
            await self._call(self.client.delete, self.collection, filter=expression)

    # --- search -------------------------------------------------------------------------------------------------

    async def search(
        self,
        tenant: str,
        query_text: str,
        query_vector: Sequence[float] | None,
        top_k: int = 20,
        mode: SearchMode = "hybrid",
    ) -> list[Passage]:
        """Top ``top_k`` live passages of ``tenant``: RRF of dense and BM25 for hybrid, higher score is better."""
        await self.ensure_collection()
        check_tenant(tenant)
        for _ in range(SNAPSHOT_ATTEMPTS):
            swaps = await self.states.swaps(tenant)
            scored = await self._scored(tenant, query_text, query_vector, top_k, mode)
            live, swaps_after = await self.states.live_versions(tenant, (hit["entity"]["doc_id"] for hit, _ in scored))
            if swaps_after == swaps:
                break  # no version went live or was deleted during the search: hits and live versions agree
        return self._live_passages(scored, live, top_k)

    async def _scored(
        self, tenant: str, query_text: str, query_vector: Sequence[float] | None, top_k: int, mode: SearchMode
    ) -> list[tuple[dict[str, Any], float]]:
        """Milvus hits with a higher-is-better score, over-fetched and not yet filtered to live versions."""
        tenant_filter = f"tenant == {literal(tenant)}"
        # Over-fetch: during a version swap a doc briefly has two versions' rows, and stale ones are dropped below.
        limit = min(max(top_k * 2, top_k + 10), 16_384)
        vector = [float(x) for x in query_vector] if query_vector is not None else None
        if mode in ("hybrid", "dense") and vector is None:
            raise ValueError(f"{mode} search needs a query vector")
        keywords = keyword_query(query_text) if self.keyword_queries else query_text
        dense_params = {"metric_type": "COSINE", "params": {"ef": max(64, limit)}}
        sparse_params = {"metric_type": "BM25"}
        if mode == "dense":
            hits = (await self._call(self.client.search,
                self.collection, data=[vector], anns_field="dense", filter=tenant_filter, limit=limit,
                search_params=dense_params, output_fields=OUTPUT_FIELDS,
            ))[0]  # fmt: skip
            scored = [(hit, float(hit["distance"])) for hit in hits]
        elif mode == "bm25":
            if not query_text.strip():
                return []
            hits = (await self._call(self.client.search,
                self.collection, data=[keywords], anns_field="sparse", filter=tenant_filter, limit=limit,
                search_params=sparse_params, output_fields=OUTPUT_FIELDS,
            ))[0]  # fmt: skip
            scored = [(hit, -float(hit["distance"])) for hit in hits]  # Lite reports BM25 as a negative distance
        else:
            from pymilvus import AnnSearchRequest, RRFRanker

            requests = [AnnSearchRequest([vector], "dense", dense_params, limit=limit, expr=tenant_filter)]
            if query_text.strip():
                requests.append(AnnSearchRequest([keywords], "sparse", sparse_params, limit=limit, expr=tenant_filter))
            hits = (await self._call(self.client.hybrid_search,
                self.collection, requests, RRFRanker(RRF_K), limit=limit, output_fields=OUTPUT_FIELDS,
            ))[0]  # fmt: skip
            scored = [(hit, float(hit["distance"])) for hit in hits]
        return scored

    @staticmethod
    def _live_passages(
        scored: list[tuple[dict[str, Any], float]], live: dict[str, int | None], top_k: int
    ) -> list[Passage]:
        passages: list[Passage] = []
        for hit, score in scored:
            entity = hit["entity"]
            version = live.get(entity["doc_id"])
            if version is not None and int(entity["version"]) != version:
                continue
            meta = entity.get("metadata") or {}
            passages.append(
                Passage(
                    chunk_id=str(hit.get("id") or hit.get("chunk_id")),
                    doc_id=entity["doc_id"],
                    text=entity["text"],
                    score=score,
                    source_uri=entity.get("source") or "",
                    title=entity.get("title") or "",
                    heading_path=[str(h) for h in meta.get("heading_path") or []],
                    char_start=int(meta.get("char_start") or 0),
                    char_end=int(meta.get("char_end") or 0),
                )
            )
            if len(passages) >= top_k:
                break
        return passages


_RELOAD_SIGNS = ("released", "not loaded", "collection not loaded", "not load")


def _needs_reload(exc: BaseException) -> bool:
    message = str(exc).lower()
    return "collection" in message and any(sign in message for sign in _RELOAD_SIGNS)


def _doc_filter(tenant: str, doc_id: str, extra: str = "") -> str:
    base = f"tenant == {literal(tenant)} and doc_id == {literal(doc_id)}"
    return f"{base} and {extra}" if extra else base


def _clip(text: str, limit: int) -> str:
    """Milvus VARCHAR max_length counts bytes; cut on a character boundary."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")
