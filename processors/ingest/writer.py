"""Embedded chunks -> live index.

:class:`IndexWriter` is the single writer of the chunk collection in a worker. It upserts embedded chunks in
batches, tracks which chunk indexes of each (tenant, doc, version) are in Milvus, and when a version is complete it
waits until the rows are searchable, flips the live version atomically, deletes older versions' rows, and reports
the document done. Progress is rebuilt from Milvus the first time a version is seen in a process, so a worker that
restarts mid-document still completes it from the replayed events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from processors.adapters.doc_states import DocStates
from processors.adapters.milvus import MilvusIndex
from processors.ingest.batching import MicroBatcher
from schemas.events import EmbeddedChunk

log = logging.getLogger(__name__)

# Seal (flush) what was written once writes pause this long, at once past this many rows, or when the oldest
# unsealed row is this old: searches over sealed segments use their indexes, over unsealed rows they scan
# (MilvusIndex.flush). Milvus Lite, 8,192 rows of 120 words, hybrid top 20 on a loaded 2-core host: all sealed
# 112 ms; 512 more unsealed +115 ms, 8,192 unsealed 2.5 s. Segment count costs little beside that (the same rows in
# 64 segments 131 ms, in 16 119 ms); a seal of 512 rows takes ~0.3 s in the server. So a bulk ingest seals every 512
# rows, and a slow trickle of writes at least every 10 s.
SEAL_AFTER_IDLE_S = 1.0
SEAL_EVERY_ROWS = 512
SEAL_MAX_AGE_S = 10.0


@dataclass(frozen=True)
class DocDone:
    tenant: str
    doc_id: str
    version: int
    status: Literal["indexed", "unchanged", "deleted", "failed"]
    chunks: int
    event_ref: str = ""
    replaced: int = 0  # the live version this one replaced (0: none)
    error: str = ""


@dataclass
class _Progress:
    total: int
    content_hash: str
    event_ref: str
    indexes: set[int] = field(default_factory=set)
    updated: float = 0.0


DocVersion = tuple[str, str, int]


class IndexWriter:
    """Batches embedded chunks into Milvus upserts and turns complete versions live (see module docstring).

    Per flush: one upsert, then for the versions it completed one verification query and one delete of older
    versions (Milvus Lite filtered queries cost ~150 ms each at 25k rows, so they are batched, never per doc).
    Progress lives in memory; a version idle for ``recover_after_s`` (e.g. its first chunks were written before a
    restart) is re-read from Milvus by a background sweep and completed from there. Written rows are sealed into
    indexed segments once writes pause for ``seal_after_idle_s``, reach ``seal_every_rows``, or the oldest has waited
    ``seal_max_age_s`` (``SEAL_*`` above).
    """

    def __init__(
        self,
        index: MilvusIndex,
        states: DocStates,
        on_done: Callable[[DocDone], Awaitable[None]],
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.02,
        recover_after_s: float = 10.0,
        seal_after_idle_s: float = SEAL_AFTER_IDLE_S,
        seal_every_rows: int = SEAL_EVERY_ROWS,
        seal_max_age_s: float = SEAL_MAX_AGE_S,
    ) -> None:
        self.index = index
        self.states = states
        self.on_done = on_done
        self.batcher: MicroBatcher[EmbeddedChunk, None] = MicroBatcher(
            self._flush, max_batch=max_batch, max_wait_s=max_wait_s, max_flushes=1
        )
        self.recover_after_s = recover_after_s
        self._progress: dict[DocVersion, _Progress] = {}
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.seal_after_idle_s = seal_after_idle_s
        self.seal_every_rows = seal_every_rows
        self.seal_max_age_s = seal_max_age_s
        self._unsealed = 0  # rows (and deletes) written since the last seal
        self._last_write = 0.0
        self._first_unsealed = 0.0  # when the oldest of them was written
        self._sealer: asyncio.Task[None] | None = None
        self._seal_due = asyncio.Event()
        self.seals = 0

    async def write(self, event: EmbeddedChunk) -> None:
        """Returns when the chunk is in Milvus (and its document live, if it was the last chunk)."""
        await self.batcher.submit(event)

    async def _flush(self, events: list[EmbeddedChunk]) -> Sequence[None]:
        async with self._lock:
            docs = list(dict.fromkeys((e.chunk.tenant, e.chunk.doc_id) for e in events))
            states = {doc: await self.states.get(*doc) for doc in docs}
            fresh = [e for e in events if states[(e.chunk.tenant, e.chunk.doc_id)].accepts(e.chunk.version)]
            await self.index.upsert([MilvusIndex.row(e) for e in fresh])
            self.rows_written += len(fresh)
            self._wrote(len(fresh))
            now = time.monotonic()
            touched: dict[DocVersion, _Progress] = {}
            for event in fresh:
                c = event.chunk
                key = (c.tenant, c.doc_id, c.version)
                progress = self._progress.setdefault(key, _Progress(c.total, c.content_hash, c.document_event_id))
                progress.indexes.add(c.index)
                progress.updated = now
                touched[key] = progress
            await self._complete([(k, p) for k, p in touched.items() if len(p.indexes) >= p.total])
        if self._progress and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.create_task(self._sweep())
        return [None] * len(events)

    async def _complete(self, items: list[tuple[DocVersion, _Progress]]) -> None:
        """Verify searchable, flip live, delete older rows, report: for every completed version at once."""
        if not items:
            return
        for key, _ in items:
            self._progress.pop(key, None)
        await self.index.wait_searchable_many([(*key, p.total) for key, p in items])
        live: list[tuple[DocVersion, _Progress, int]] = []
        superseded: list[tuple[DocVersion, _Progress]] = []
        for key, progress in items:
            previous = await self.states.activate(*key, progress.content_hash, progress.total)
            if previous is None:  # a newer version went live, or the doc was deleted, while this one was built
                superseded.append((key, progress))
            else:
                live.append((key, progress, previous))
        await self.index.delete_versions([(t, d, "<", v) for (t, d, v), _, _ in live]
                                         + [(t, d, "==", v) for (t, d, v), _ in superseded])  # fmt: skip
        self._wrote(1)
        for (tenant, doc_id, version), progress, previous in live:
            await self.on_done(DocDone(tenant, doc_id, version, "indexed", progress.total, progress.event_ref,
                                       replaced=previous if previous != version else 0))  # fmt: skip
        for (tenant, doc_id, version), progress in superseded:
            await self.on_done(DocDone(tenant, doc_id, version, "unchanged", 0, progress.event_ref,
                                       error="superseded"))  # fmt: skip

    async def _sweep(self) -> None:
        """Complete versions whose in-memory progress misses chunks written before this process started."""
        while self._progress:
            await asyncio.sleep(self.recover_after_s / 2)
            cutoff = time.monotonic() - self.recover_after_s
            idle = [key for key, p in self._progress.items() if p.updated < cutoff]
            if not idle:
                continue
            try:
                async with self._lock:
                    done = []
                    for key in idle:
                        progress = self._progress.get(key)
                        if progress is None:
                            continue
                        progress.indexes |= await self.index.chunk_indexes(*key)
                        progress.updated = time.monotonic()
                        if len(progress.indexes) >= progress.total:
                            done.append((key, progress))
                    await self._complete(done)
            except Exception:
                log.warning("recovery sweep failed; retrying in %.0fs", self.recover_after_s, exc_info=True)

    def _wrote(self, rows: int) -> None:
        """Count a write towards the next seal, and make sure a sealer is waiting for it."""
        if not self._unsealed:
            self._first_unsealed = time.monotonic()
        self._unsealed += rows
        self._last_write = time.monotonic()
        if self._unsealed >= self.seal_every_rows:
            self._seal_due.set()
        if self._sealer is None or self._sealer.done():
            self._sealer = asyncio.create_task(self._seal_when_due())

    async def _seal_when_due(self) -> None:
        """Seal once writes have paused for ``seal_after_idle_s``, the oldest unsealed row is ``seal_max_age_s`` old,
        or at once when ``seal_every_rows`` are due."""
        while self._unsealed:
            now = time.monotonic()
            idle, age = now - self._last_write, now - self._first_unsealed
            wait = min(self.seal_after_idle_s - idle, self.seal_max_age_s - age)
            if not self._seal_due.is_set() and wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._seal_due.wait(), wait)
                continue
            self._seal_due.clear()
            pending, sealing_from = self._unsealed, time.monotonic()
            try:
                await self.index.flush()
            except Exception:  # searches still see the rows, only slower; try again after a pause
                log.warning("could not seal %d written rows; retrying", pending, exc_info=True)
                await asyncio.sleep(max(self.seal_after_idle_s, 1.0))
                continue
            self._unsealed -= pending
            self._first_unsealed = sealing_from  # rows written during the seal are no older than its start
            self.seals += 1
            if self._unsealed >= self.seal_every_rows:
                self._seal_due.set()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._sealer is not None:
            self._sealer.cancel()
            await asyncio.gather(self._sealer, return_exceptions=True)
            self._sealer = None

    async def abandon(self, tenant: str, doc_id: str, version: int) -> bool:
        """Roll back a version that failed part-way: it can never go live, its late chunks are dropped, it leaves
        the recovery sweep, and its rows are deleted (unless it is the live version). False if it was live."""
        async with self._lock:
            live = await self.states.mark_failed(tenant, doc_id, version)
            self._progress.pop((tenant, doc_id, version), None)
            if live == version:
                return False
            await self.index.delete_version(tenant, doc_id, version)
            self._wrote(1)
            return True

    async def activate_empty(self, tenant: str, doc_id: str, version: int, digest: str, event_ref: str) -> DocDone:
        """A document with no text: it goes live with zero chunks (older versions' rows removed)."""
        async with self._lock:
            previous = await self.states.activate(tenant, doc_id, version, digest, 0)
            if previous is None:
                return DocDone(tenant, doc_id, version, "unchanged", 0, event_ref, error="superseded")
            await self.index.delete_older_versions(tenant, doc_id, version)
            self._wrote(1)
            return DocDone(tenant, doc_id, version, "indexed", 0, event_ref, replaced=previous)

    async def delete(self, tenant: str, doc_id: str, event_ref: str = "") -> DocDone:
        """Tombstone first (search hides the doc at once), then remove every row of every version."""
        async with self._lock:
            through = await self.states.mark_deleted(tenant, doc_id)
            for key in [k for k in self._progress if k[0] == tenant and k[1] == doc_id]:
                del self._progress[key]
            await self.index.delete_document(tenant, doc_id)
            self._wrote(1)
            return DocDone(tenant, doc_id, through, "deleted", 0, event_ref)
