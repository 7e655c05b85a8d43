"""Per-key and per-tenant quotas shared by every bridge instance, kept in Redis.

One API key must not be able to take every connection slot or flood the queries topic, and the limit has to hold
across bridge instances behind a load balancer, so the counts live in Redis, changed by Lua scripts (one round trip,
atomic, Redis's own clock):

* **connections**: a sorted set per key and per tenant whose members are the open connections (WebSockets and
  in-flight API requests) scored by when their lease ends. A bridge renews its leases every few seconds; the slots
  of a bridge that crashed expire by themselves after ``bridge_quota_lease_s``.
* **request rate**: a token bucket per key and per tenant (rate per second and burst); an ask takes one token from
  both or from neither.

When Redis cannot be reached the quotas fail open (logged, at most once a minute): refusing every user because the
quota store is down would turn a partial outage into a full one, and each bridge's own connection cap still holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from infra.settings import Settings
from streams.redis_client import redis_client

log = logging.getLogger(__name__)

# KEYS: key's set, tenant's set. ARGV: member, lease ms, key limit, tenant limit.
# Returns 0 (taken), 1 (the key is at its limit) or 2 (the tenant is).
_TAKE_SLOT = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000 + math.floor(tonumber(now_s[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return 0
"""

# KEYS: (set, member) pairs flattened as KEYS[2i-1] = set; ARGV[1] = lease ms, ARGV[i+1] = member of KEYS[i].
_RENEW = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000 + math.floor(tonumber(now_s[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, set in ipairs(KEYS) do
  redis.call('ZADD', set, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', set, lease * 2)
end
return 0
"""

# KEYS: key's bucket, tenant's bucket. ARGV: key rate/s, key burst, tenant rate/s, tenant burst.
# Returns {0, 0} (one token taken from each), or {1 or 2 (who refused), ms until a token is there}.
_TAKE_TOKEN = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) + tonumber(now_s[2]) / 1000000
local function level(bucket, rate, burst)
  local state = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  return math.min(burst, tokens + math.max(0, now - at) * rate)
end
local buckets = {{KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])}, {KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4])}}
local levels = {}
for i, b in ipairs(buckets) do
  levels[i] = level(b[1], b[2], b[3])
  if levels[i] < 1 then
    return {i, math.ceil((1 - levels[i]) / b[2] * 1000)}
  end
end
for i, b in ipairs(buckets) do
  redis.call('HSET', b[1], 'tokens', tostring(levels[i] - 1), 'at', tostring(now))
  redis.call('EXPIRE', b[1], math.ceil(b[3] / b[2]) + 60)
end
return {0, 0}
"""


@dataclass(frozen=True)
class Refusal:
    """Why a connection or an ask was refused, and when trying again may work."""

    message: str
    retry_after_s: float


class Quotas:
    """Connection slots and request-rate buckets per API key and per tenant, across bridge instances."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self._redis = redis or redis_client(settings.redis_address, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = f"{settings.topic_prefix}quota:"
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._renew = self._redis.register_script(_RENEW)
        self._take_token = self._redis.register_script(_TAKE_TOKEN)
        self._held: dict[str, tuple[str, str]] = {}  # connection id -> (key's set, tenant's set)
        self._warned_at = 0.0

    def _sets(self, key: str, tenant: str) -> tuple[str, str]:
        return f"{self._prefix}conn:key:{key}", f"{self._prefix}conn:tenant:{tenant}"

    def _unavailable(self, exc: Exception) -> None:
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("quota store unreachable (%s); quotas are not enforced until it is back", exc)

    async def open(self, connection: str, key: str, tenant: str) -> Refusal | None:
        """Take a connection slot for ``connection`` (refused when the key or the tenant holds all of theirs)."""
        s = self.settings
        sets = self._sets(key, tenant)
        lease_ms = int(s.bridge_quota_lease_s * 1000)
        try:
            taken = await self._take_slot(
                keys=list(sets), args=[connection, lease_ms, s.bridge_key_connections, s.bridge_tenant_connections]
            )
        except RedisError as exc:
            self._unavailable(exc)
            return None
        if taken == 1:
            return Refusal(f"this API key has {s.bridge_key_connections} open connections, its limit", 5.0)
        if taken == 2:
            return Refusal(f"this tenant has {s.bridge_tenant_connections} open connections, its limit", 5.0)
        self._held[connection] = sets
        return None

    async def close(self, connection: str) -> None:
        sets = self._held.pop(connection, None)
        if sets is None:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in sets:
                    pipe.zrem(name, connection)
                await pipe.execute()
        except RedisError as exc:  # the lease runs out by itself
            self._unavailable(exc)

    async def renew(self) -> None:
        """Extend the leases of every connection this bridge holds (called every few seconds)."""
        if not self._held:
            return
        keys: list[str] = []
        members: list[str] = []
        for connection, sets in self._held.items():
            for name in sets:
                keys.append(name)
                members.append(connection)
        try:
            await self._renew(keys=keys, args=[int(self.settings.bridge_quota_lease_s * 1000), *members])
        except RedisError as exc:
            self._unavailable(exc)

    async def take_request(self, key: str, tenant: str) -> Refusal | None:
        """One ask's worth of both the key's and the tenant's request rate, or why not."""
        s = self.settings
        buckets = [f"{self._prefix}rate:key:{key}", f"{self._prefix}rate:tenant:{tenant}"]
        args = [s.bridge_key_rate, s.bridge_key_burst, s.bridge_tenant_rate, s.bridge_tenant_burst]
        try:
            who, wait_ms = await self._take_token(keys=buckets, args=args)
        except RedisError as exc:
            self._unavailable(exc)
            return None
        if who == 0:
            return None
        owner = "API key" if who == 1 else "tenant"
        rate = s.bridge_key_rate if who == 1 else s.bridge_tenant_rate
        return Refusal(f"this {owner} is over its request rate ({rate:g}/s)", int(wait_ms) / 1000.0)

    async def aclose(self) -> None:
        for connection in list(self._held):
            await self.close(connection)
        await self._redis.aclose()


class QuotaExceeded(Exception):
    """Raised when a connection cannot get a slot; each front door answers it its own way (HTTP 429)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
