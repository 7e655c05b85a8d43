"""Per-document state in Redis: which version is live, its content hash, the newest version seen, deletions.

The live version is what makes a version swap gapless. Milvus holds the rows of every version being built; search
keeps a hit only if its version is the document's live version. The indexer writes all rows of a new version,
checks they are searchable, then flips ``live`` in one atomic step (a Lua script), and only then deletes the old
rows: before the flip searchers see exactly the old version, after it exactly the new one. A search and its read of
the live versions are two steps; every flip bumps the tenant's swap counter, so a search that saw it change in
between runs again (``MilvusIndex.search``).

Hash ``<prefix>:doc:<tenant>:<doc_id>`` fields: ``live`` (version or -1 deleted, 0 none yet), ``hash``, ``chunks``,
``latest`` (newest version the chunker accepted), ``deleted`` (versions up to this one were deleted), ``failed``
(versions up to this one that are not live failed part-way and were rolled back: their late chunks are dropped and
they can never go live).
Tenants are restricted to ``[A-Za-z0-9_.-]`` so the key is unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_PREFIX = "ragstream"

# KEYS[1] doc key, KEYS[2] the tenant's swap counter; ARGV: version, hash, chunks. Returns the previous live
# version, or -2 if not activated.
_ACTIVATE = """
local v = tonumber(ARGV[1])
local live = tonumber(redis.call('HGET', KEYS[1], 'live') or '0')
local deleted = tonumber(redis.call('HGET', KEYS[1], 'deleted') or '0')
local failed = tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')
if v <= deleted or v < live or (v <= failed and v ~= live) then return -2 end
redis.call('HSET', KEYS[1], 'live', v, 'hash', ARGV[2], 'chunks', ARGV[3])
redis.call('INCR', KEYS[2])
return live
"""

# KEYS[1] doc key; ARGV: version. Records the version as the newest seen; returns the newest (a larger one wins).
_BEGIN = """
local v = tonumber(ARGV[1])
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
local deleted = tonumber(redis.call('HGET', KEYS[1], 'deleted') or '0')
redis.call('HSETNX', KEYS[1], 'live', 0)
if v <= deleted then return -1 end
if v > latest then redis.call('HSET', KEYS[1], 'latest', v); return v end
return latest
"""

# KEYS[1] doc key, KEYS[2] the tenant's swap counter. Everything up to the newest version seen is deleted; returns
# that version.
_DELETE = """
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
local live = tonumber(redis.call('HGET', KEYS[1], 'live') or '0')
local deleted = tonumber(redis.call('HGET', KEYS[1], 'deleted') or '0')
local through = math.max(latest, live, deleted)
redis.call('HSET', KEYS[1], 'live', -1, 'deleted', through, 'latest', through, 'hash', '', 'chunks', 0)
redis.call('INCR', KEYS[2])
return through
"""


# KEYS[1] doc key; ARGV: version. Marks the version (and older ones that are not live) as failed; returns the live
# version, so the caller knows whether the failed version's rows may be deleted (never the live one's).
_FAIL = """
local v = tonumber(ARGV[1])
local failed = tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')
if v > failed then redis.call('HSET', KEYS[1], 'failed', v) end
return tonumber(redis.call('HGET', KEYS[1], 'live') or '0')
"""


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant {tenant!r}: 1-64 characters of [A-Za-z0-9_.-]")
    return tenant


@dataclass(frozen=True)
class DocState:
    live: int = 0
    hash: str = ""
    chunks: int = 0
    latest: int = 0
    deleted: int = 0
    failed: int = 0

    @property
    def next_version(self) -> int:
        return max(self.live, self.latest, self.deleted, self.failed) + 1

    def accepts(self, version: int) -> bool:
        """Whether rows of ``version`` may still be written: not deleted, not older than the live version, and not
        a version that failed and was rolled back."""
        return version > self.deleted and version >= self.live and (version > self.failed or version == self.live)


class DocStates:
    def __init__(self, redis: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._activate = redis.register_script(_ACTIVATE)
        self._begin = redis.register_script(_BEGIN)
        self._delete = redis.register_script(_DELETE)
        self._fail = redis.register_script(_FAIL)

    def key(self, tenant: str, doc_id: str) -> str:
        return f"{self.prefix}:doc:{tenant}:{doc_id}"

    def swaps_key(self, tenant: str) -> str:
        return f"{self.prefix}:swaps:{tenant}"

    async def swaps(self, tenant: str) -> int:
        """How many times a live version of this tenant changed (activation or deletion). A searcher that reads it
        before and after a search knows whether its hits and the live versions it read belong to one moment."""
        return int(await self.redis.get(self.swaps_key(tenant)) or 0)

    async def get(self, tenant: str, doc_id: str) -> DocState:
        return (await self.get_many(tenant, [doc_id]))[0]

    async def get_many(self, tenant: str, doc_ids: Sequence[str]) -> list[DocState]:
        pipe = self.redis.pipeline(transaction=False)
        for doc_id in doc_ids:
            pipe.hmget(self.key(tenant, doc_id), "live", "hash", "chunks", "latest", "deleted", "failed")
        rows: list[list[bytes | None]] = await pipe.execute()
        return [
            DocState(
                live=int(live or 0),
                hash=(hash_ or b"").decode(),
                chunks=int(chunks or 0),
                latest=int(latest or 0),
                deleted=int(deleted or 0),
                failed=int(failed or 0),
            )
            for live, hash_, chunks, latest, deleted, failed in rows
        ]

    async def live_versions(self, tenant: str, doc_ids: Iterable[str]) -> tuple[dict[str, int | None], int]:
        """Live version per doc (None where the doc has no state: rows written by something else, shown), and the
        tenant's swap count read after them, in one round trip."""
        ids = list(dict.fromkeys(doc_ids))
        pipe = self.redis.pipeline(transaction=False)
        for doc_id in ids:
            pipe.hget(self.key(tenant, doc_id), "live")
        pipe.get(self.swaps_key(tenant))
        *values, swaps = await pipe.execute()
        live = {doc_id: (int(v) if v is not None else None) for doc_id, v in zip(ids, values, strict=True)}
        return live, int(swaps or 0)

    async def begin(self, tenant: str, doc_id: str, version: int) -> int:
        """Record that ``version`` is being built; returns the newest version seen (-1: already deleted)."""
        return int(await self._begin(keys=[self.key(tenant, doc_id)], args=[version]))

    async def activate(self, tenant: str, doc_id: str, version: int, content_hash: str, chunks: int) -> int | None:
        """Make ``version`` live atomically; returns the version it replaced (0: none), None if it is stale."""
        keys = [self.key(tenant, doc_id), self.swaps_key(tenant)]
        previous = int(await self._activate(keys=keys, args=[version, content_hash, chunks]))
        return None if previous == -2 else previous

    async def mark_failed(self, tenant: str, doc_id: str, version: int) -> int:
        """Roll ``version`` back for good (it can never go live); returns the live version."""
        return int(await self._fail(keys=[self.key(tenant, doc_id)], args=[version]))

    async def mark_deleted(self, tenant: str, doc_id: str) -> int:
        """Tombstone the doc: returns the version through which everything is deleted."""
        return int(await self._delete(keys=[self.key(tenant, doc_id), self.swaps_key(tenant)]))
