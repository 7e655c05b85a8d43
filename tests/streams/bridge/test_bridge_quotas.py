"""Quotas on the real stack: one API key cannot take more than its share of connections or request rate, the
counts hold across bridge instances (they live in Redis), a second tenant is still served, idle sockets are closed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.settings import Settings
from schemas.events import new_id
from streams.bridge.server import Bridge
from tests.conftest import WorkerProcess, client

ECHO = {"model": "llm_echo", "use_cache": False, "max_tokens": 4}


@dataclass
class Pair:
    """Two bridge instances, as behind a load balancer, and two fresh API keys (quotas count per key in Redis, so
    every test starts with untouched ones): ``key`` of the first tenant, ``other`` of the second."""

    first: Bridge
    second: Bridge
    key: str
    other: str


@pytest.fixture
async def bridges(stack_settings: Settings, tenants: tuple[str, str], worker: WorkerProcess) -> AsyncIterator[Pair]:
    acme, globex = tenants
    key, other = f"k{new_id()[:12]}", f"o{new_id()[:12]}"
    settings = stack_settings.with_changes(
        bridge_port=0,
        api_keys=f"{key}:{acme},{other}:{globex}",
        bridge_key_connections=3,
        bridge_key_rate=0.2,  # one token every 5 s: a burst of 2, then refusals for the rest of the test
        bridge_key_burst=2,
        bridge_idle_timeout_s=2.0,
    )
    first = Bridge(settings, instance=f"qa{new_id()[:6]}")
    second = Bridge(settings, instance=f"qb{new_id()[:6]}")
    await first.start()
    await second.start()
    try:
        yield Pair(first, second, key, other)
    finally:
        await asyncio.gather(first.stop(), second.stop())


def url(bridge: Bridge) -> str:
    return f"ws://127.0.0.1:{bridge.port}"


async def ask(ws: ClientConnection, question: str = "What is the frobnicator?") -> dict[str, object]:
    await ws.send(json.dumps({"type": "ask", "question": question, "options": ECHO}))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 30)))


async def until_done(ws: ClientConnection) -> dict[str, object]:
    async with asyncio.timeout(60):
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] in ("done", "error"):
                return dict(message)
    raise AssertionError("closed before done")


async def test_one_key_cannot_hold_more_connections_than_its_quota_on_any_instance(bridges: Pair) -> None:
    first, second, key = bridges.first, bridges.second, bridges.key
    async with client(url(first), key), client(url(first), key), client(url(second), key):
        for bridge in (first, second):  # the fourth is refused wherever it arrives
            with pytest.raises(InvalidStatus) as refused:
                async with client(url(bridge), key):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"]
            assert b"open connections" in refused.value.response.body
        async with client(url(second), bridges.other) as other:  # another tenant is still served, to the end
            assert (await ask(other))["type"] == "accepted"
            assert (await until_done(other))["type"] == "done"
    async with client(url(second), key) as again:  # closing frees the slots
        assert (await ask(again))["type"] == "accepted"


async def test_one_key_cannot_ask_faster_than_its_rate_and_another_tenant_is_still_served(bridges: Pair) -> None:
    first, second, key = bridges.first, bridges.second, bridges.key
    async with client(url(first), key) as ws, client(url(second), key) as elsewhere:
        assert (await ask(ws))["type"] == "accepted"
        assert (await ask(elsewhere))["type"] == "accepted"  # the burst of 2 is shared by both instances
        refused = await ask(ws)
        assert (refused["type"], refused["code"], refused["retryable"]) == ("error", "too_many_requests", True)
        assert isinstance(refused["retry_after_s"], float) and refused["retry_after_s"] > 0
        async with client(url(first), bridges.other) as other:
            assert (await ask(other))["type"] == "accepted"
            assert (await until_done(other))["type"] == "done"


async def test_an_idle_socket_is_closed_with_1000(bridges: Pair) -> None:
    async with client(url(bridges.first), bridges.other) as idle:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await idle.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert "idle" in closed.value.rcvd.reason


async def test_health_turns_unhealthy_when_the_reply_reader_has_stopped(bridges: Pair) -> None:
    first = bridges.first
    assert first.problem() is None
    assert first._reader is not None
    first._reader.cancel()  # a fault the real services cannot be made to cause: the reader task is gone
    await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    assert first.problem() == "reply reader stopped"
