"""Redis clients that survive a Redis restart.

redis-py's asyncio client keeps its pooled connections; after Redis restarts, each of them fails its next command
once with "Connection closed by server" (redis-py 8 retries nothing by default), so a worker failed one stage per
stale connection for as long as those connections sat in the pool (seen by the fault suite 50 s after the restart,
benchmarks/reliability). Every command here is retried on a connection error with a short backoff: a stale
connection reconnects at once, and a Redis that is really down still fails within about half a second.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

RETRIES = 3


def redis_client(address: str, **options: Any) -> aioredis.Redis:
    """``aioredis.Redis.from_url(address, **options)`` with retries on connection errors (see the module doc)."""
    return aioredis.Redis.from_url(
        address,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        retry_on_error=[RedisConnectionError],
        **options,
    )
