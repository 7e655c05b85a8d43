"""A Redis restart costs no command: the pooled connections redis-py keeps fail once each after a restart ("Connection
closed by server") unless retried; streams.redis_client retries them. Real Redis, killed with SIGKILL by its PID and
started again by the project's own service code, as the fault suite does (benchmarks/reliability)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from infra.services._process import _proc_start_time, port_in_use
from infra.services.redis import Redis
from streams.redis_client import redis_client
from tests.conftest import isolated_settings

pytestmark = pytest.mark.services


def kill_and_restart(service: Redis) -> None:
    pid = int(service.pid_file.read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    # Gone, and its listening socket closed (a process in exit may hold it a moment after it stops running).
    while _proc_start_time(pid) is not None or port_in_use(service.settings.host, service.settings.redis_port):
        assert time.monotonic() < deadline, "Redis did not go away after SIGKILL"
        time.sleep(0.05)
    service.start()


async def warm(client: aioredis.Redis, connections: int) -> None:
    """Open ``connections`` pooled connections (one per concurrent command)."""
    await client.set("k", "v")
    await asyncio.gather(*(client.blpop(["nothing"], timeout=0.2) for _ in range(connections)))


async def test_pooled_connections_survive_a_redis_restart(tmp_path: Path) -> None:
    service = Redis(isolated_settings(tmp_path / "stack"))
    service.start()
    plain = aioredis.Redis.from_url(service.address)
    retried = redis_client(service.address)
    try:
        await warm(plain, 5)
        await warm(retried, 5)
        kill_and_restart(service)
        # The plain client's stale connections fail (what the worker saw); the project's client answers every one.
        results = await asyncio.gather(*(plain.get("k") for _ in range(5)), return_exceptions=True)
        assert any(isinstance(r, RedisConnectionError) for r in results), results
        assert await asyncio.gather(*(retried.get("k") for _ in range(5))) == [b"v"] * 5  # AOF kept the key
        assert await asyncio.gather(*(retried.get("k") for _ in range(5))) == [b"v"] * 5
    finally:
        await plain.aclose()
        await retried.aclose()
        service.stop()
