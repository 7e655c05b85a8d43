"""The WebSocket bridge on the real stack: protocol, auth, 200 clients, cancel, resume across a restart, scale-out.

Assertions are about the protocol (ids, consecutive seqs, deltas that add up to ``done.text``), not the answer's
content, which belongs to the query pipeline. ``llm_echo`` streams at a known pace, so timings are predictable.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.settings import REPO_ROOT, Settings
from infra.stack import Stack, free_ports
from schemas.codec import EventDecoder, encode
from schemas.events import AnswerDone, CancelRequest, TokenDelta, new_id
from schemas.topics import Topic
from streams.bridge.server import Bridge
from streams.kafka import follow_from_end, topic_partitions
from tests.conftest import KEY, QUESTION, BridgeProcess, WorkerProcess, client

OTHER_KEY = "other-key"
ECHO = {"model": "llm_echo", "use_cache": False}
Message = dict[str, Any]


@pytest.fixture(scope="module")
def bridge_settings(stack_settings: Settings, tenants: tuple[str, str], corpus: dict[str, Path]) -> Settings:
    """Keys of the two tenants that hold the test corpus, so questions retrieve sources and the model streams."""
    acme, globex = tenants
    return stack_settings.with_changes(
        bridge_port=free_ports(1)[0],
        api_keys=f"{KEY}:{acme},{OTHER_KEY}:{globex}",
        bridge_instance=f"t{new_id()[:8]}",
        # These tests open 200 sockets with one key (one tenant) at once; the quotas have their own tests.
        bridge_key_connections=1000,
        bridge_key_burst=1000,
        bridge_key_rate=1000.0,
        bridge_tenant_connections=1000,
        bridge_tenant_burst=1000,
        bridge_tenant_rate=1000.0,
        # 200 questions at once queue for the worker's prepare slots on 2 cores; the deadline stamped on each
        # request must outlast that queue, or the worker rightly answers `timeout` (deadline tests are elsewhere).
        request_timeout_s=150.0,
    )


@pytest.fixture(scope="module")
async def bridge(
    worker: WorkerProcess, bridge_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BridgeProcess]:
    process = BridgeProcess(bridge_settings, tmp_path_factory.mktemp("bridge") / "bridge.log")
    try:
        await process.wait_ready()
        yield process
    finally:
        process.terminate()


async def receive_until_end(ws: ClientConnection, timeout_s: float = 60.0) -> list[Message]:
    """Every message up to and including the first done or error."""
    messages: list[Message] = []
    async with asyncio.timeout(timeout_s):
        async for frame in ws:
            messages.append(json.loads(frame))
            if messages[-1]["type"] in ("done", "error"):
                return messages
    raise AssertionError(f"connection closed before done/error: {messages[-3:]}")


async def ask(ws: ClientConnection, question: str, client_id: str | int | None = None, **options: Any) -> str:
    """Send an ask and return the request id from its ``accepted``."""
    await ws.send(json.dumps({"type": "ask", "id": client_id, "question": question, "options": {**ECHO, **options}}))
    accepted = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert accepted["type"] == "accepted", accepted
    assert accepted["id"] == client_id
    return str(accepted["request_id"])


def assert_complete_answer(messages: list[Message], request_id: str, *, streamed: bool = True) -> Message:
    """Tokens of this request only, seq 0..n-1, adding up to done.text; returns the done. ``streamed``: the model
    produced it (not a refusal or a cache hit answered whole)."""
    done = messages[-1]
    assert done["type"] == "done", done
    assert all(m["request_id"] == request_id for m in messages), "another request's message reached this client"
    tokens = [m for m in messages if m["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens))), "gap or duplicate in seq"
    assert "".join(t["text"] for t in tokens) == done["text"]
    assert done["deltas"] == len(tokens)
    assert {"finish_reason", "model", "cached", "timings_ms", "usage", "prompt"} <= set(done)
    if streamed:
        assert done["model"] == "llm_echo" and not done["cached"] and len(tokens) >= 2, done
    return done


def question_of(words: int) -> str:
    """A question the corpus answers (so llm_echo streams the prompt back: sources, then the question), about
    ``words`` words long. Requests are told apart by their ids; the cache is off (``ECHO``)."""
    padding = " ".join(["Please explain the frobnicator timeout setting in detail."] * max(0, (words - 8) // 8))
    return f"{QUESTION} {padding}".strip()


class TopicTail:
    """A plain aiokafka consumer on a topic from its current end, for checking what the bridge produced."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
        self.seen: list[tuple[bytes | None, bytes]] = []

    async def __aenter__(self) -> TopicTail:
        await self.consumer.start()
        await follow_from_end(self.consumer, self.topic)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(self, match: Callable[[bytes | None, bytes], bool], timeout_s: float = 15.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for key, value in self.seen:
                if match(key, value):
                    return value
            batch = await self.consumer.getmany(timeout_ms=200)
            self.seen.extend((r.key, r.value) for records in batch.values() for r in records)
        raise AssertionError(f"nothing matching on {self.topic} within {timeout_s}s")


_cancels: EventDecoder[CancelRequest] = EventDecoder(CancelRequest)


def keyed(request_id: str) -> Callable[[bytes | None, bytes], bool]:
    return lambda key, _value: key == request_id.encode()


async def test_an_ask_is_accepted_and_streams_consecutive_tokens_then_done(bridge: BridgeProcess) -> None:
    async with client(bridge.url) as ws:
        request_id = await ask(ws, question_of(40), client_id="c1")
        assert_complete_answer(await receive_until_end(ws), request_id)


async def test_the_key_may_come_in_the_query_and_bad_keys_get_401_before_the_upgrade(bridge: BridgeProcess) -> None:
    async with connect(f"{bridge.url}/?api_key={KEY}") as ws:
        request_id = await ask(ws, question_of(8), client_id=7)
        assert_complete_answer(await receive_until_end(ws), request_id)
    for url, headers in (
        (bridge.url, {"Authorization": "Bearer wrong"}),
        (bridge.url, {}),
        (f"{bridge.url}/?api_key=x", {}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401


async def test_bad_messages_get_error_messages_and_the_connection_stays_usable(bridge: BridgeProcess) -> None:
    async with client(bridge.url) as ws:
        await ws.send('{"type":"ask","options":{}}')
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "bad_request" and "question" in error["message"]
        await ws.send(json.dumps({"type": "resume", "id": new_id(), "after_seq": -1}))
        assert json.loads(await ws.recv())["code"] == "unknown_request"
        request_id = await ask(ws, question_of(8))
        assert_complete_answer(await receive_until_end(ws), request_id)


async def test_deep_nesting_and_unserveable_options_are_bad_requests_on_a_usable_connection(
    bridge: BridgeProcess,
) -> None:
    async with client(bridge.url) as ws:
        await ws.send('{"type":"ask","question":"q","extra":' + "[" * 1000 + "]" * 1000 + "}")
        assert json.loads(await ws.recv())["code"] == "bad_request"
        for options, field in (({"max_tokens": 2**40}, "max_tokens"), ({"model": "embedder"}, "options.model")):
            await ws.send(json.dumps({"type": "ask", "id": field, "question": "q", "options": options}))
            error = json.loads(await ws.recv())
            assert (error["type"], error["code"], error["id"]) == ("error", "bad_request", field)
            assert field in error["message"]
        request_id = await ask(ws, question_of(8))
        assert_complete_answer(await receive_until_end(ws), request_id)


async def test_two_authorization_headers_are_a_400_not_a_server_error(bridge: BridgeProcess) -> None:
    headers = [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer other")]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(bridge.url, additional_headers=headers):
            pass
    assert refused.value.response.status_code == 400
    assert b"one Authorization header" in refused.value.response.body


async def test_a_resume_from_a_second_socket_tells_the_first_where_its_answer_went(bridge: BridgeProcess) -> None:
    async with client(bridge.url) as first, client(bridge.url) as second:
        request_id = await ask(first, question_of(200), client_id="mine", max_tokens=200)
        await second.send(json.dumps({"type": "resume", "request_id": request_id, "after_seq": -1}))
        notice = None
        async with asyncio.timeout(30):
            async for frame in first:
                message = json.loads(frame)
                if message["type"] == "error":
                    notice = message
                    break
        assert notice is not None and notice["code"] == "resumed_elsewhere" and notice["request_id"] == request_id
        assert_complete_answer(await receive_until_end(second), request_id)


async def test_poison_on_the_reply_topic_leaves_the_bridge_answering_and_healthy(
    bridge: BridgeProcess, bridge_settings: Settings
) -> None:
    """Anything a producer can write to the reply topic (garbage, deep nesting, a wrong event type, no key)."""
    topic = bridge_settings.bridge_reply_topic(bridge_settings.bridge_instance)
    nested = b"\x91" * 5000 + b"\xc0"  # a msgpack array nested 5000 deep
    poison = [
        (b"k1", b"\x00garbage"),
        (b"k2", nested),
        (b"k3", encode(CancelRequest(request_id="k3", reason="not an answer event"))),
        (None, b"no key"),
        (b"\xff" * 300, encode(TokenDelta(request_id="x", seq=0, text="orphan"))),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bridge_settings.kafka_servers)
    await producer.start()
    try:
        for key, value in poison:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    async with client(bridge.url) as ws:
        request_id = await ask(ws, question_of(8))
        assert_complete_answer(await receive_until_end(ws), request_id)
    health = f"http://127.0.0.1:{bridge_settings.bridge_port}/healthz"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(health, timeout=5).read())
    assert body == b"ok\n"


async def test_200_concurrent_clients_each_get_their_own_complete_answer(bridge: BridgeProcess) -> None:
    async def one(i: int) -> tuple[str, Message]:
        async with client(bridge.url) as ws:
            # short answers: the test is about 200 sockets at once, not about generation throughput
            request_id = await ask(ws, question_of(8), client_id=i, max_tokens=16)
            return request_id, assert_complete_answer(await receive_until_end(ws, timeout_s=180), request_id)

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert len({request_id for request_id, _ in results}) == 200
    assert all(done["request_id"] == request_id for request_id, done in results)


async def test_cancel_messages_and_disconnects_put_cancel_requests_on_kafka(
    bridge: BridgeProcess, bridge_settings: Settings
) -> None:
    async with TopicTail(bridge_settings, bridge_settings.topic(Topic.CANCELLATIONS)) as tail:
        async with client(bridge.url) as ws:
            request_id = await ask(ws, question_of(300), client_id="c-cancel", max_tokens=300)
            await ws.send(json.dumps({"type": "cancel", "id": "c-cancel"}))
            messages = await receive_until_end(ws)
            assert messages[-1]["type"] in ("done", "error") and messages[-1]["request_id"] == request_id
        cancel = _cancels.decode(await tail.wait_for(keyed(request_id)))
        assert cancel.request_id == request_id and cancel.reason == "client"

        async with client(bridge.url) as ws:  # closed right after accepted: the answer is still on its way
            gone_id = await ask(ws, question_of(300), max_tokens=300)
        cancel = _cancels.decode(await tail.wait_for(keyed(gone_id)))
        assert cancel.reason == "disconnect"


async def start_bridge(settings: Settings, instance: str, port: int = 0) -> Bridge:
    bridge = Bridge(settings.with_changes(bridge_port=port), instance=instance)
    await bridge.start()
    return bridge


async def test_resume_after_a_bridge_restart_mid_answer_loses_nothing(
    worker: WorkerProcess, bridge_settings: Settings
) -> None:
    instance = f"restart{new_id()[:6]}"
    first = await start_bridge(bridge_settings, instance)
    port = first.port
    async with TopicTail(bridge_settings, bridge_settings.topic(Topic.CANCELLATIONS)) as tail:
        try:
            async with client(f"ws://127.0.0.1:{port}") as ws:
                request_id = await ask(ws, question_of(250), max_tokens=250)
                await first.stop()  # the answer is in flight (250 echo tokens take over a second): events keep coming
                seen: list[Message] = []
                with pytest.raises(ConnectionClosed):
                    while True:
                        seen.append(json.loads(await ws.recv()))
                assert ws.close_code == 1001
        finally:
            await first.stop()
        seen = [m for m in seen if m["type"] == "token"]

        second = await start_bridge(bridge_settings, instance, port)
        try:
            async with client(f"ws://127.0.0.1:{port}") as ws:
                after_seq = seen[-1]["seq"] if seen else -1
                await ws.send(json.dumps({"type": "resume", "id": request_id, "after_seq": after_seq}))
                rest = await receive_until_end(ws)
            async with client(f"ws://127.0.0.1:{port}", key=OTHER_KEY) as ws:  # another tenant cannot resume it
                await ws.send(json.dumps({"type": "resume", "id": request_id}))
                assert json.loads(await ws.recv())["code"] == "unknown_request"
        finally:
            await second.stop()
        done = assert_complete_answer(seen + rest, request_id)
        assert done["finish_reason"] != "cancelled"  # a restart is not a cancel
        with pytest.raises(AssertionError):
            await tail.wait_for(keyed(request_id), timeout_s=1.0)


async def test_resume_replays_what_was_missed_then_attaches_to_the_live_rest(
    stack: Stack, bridge_settings: Settings
) -> None:
    """Deterministic: a topic prefix no worker reads, and the test writes the answer events itself, around a restart."""
    settings = bridge_settings.with_changes(topic_prefix=f"scripted{new_id()[:6]}")
    instance = "scripted"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all")
    await producer.start()
    reply_topic = settings.bridge_reply_topic(instance)

    async def emit(request_id: str, event: TokenDelta | AnswerDone) -> None:
        await producer.send_and_wait(reply_topic, encode(event), key=request_id.encode())

    def delta(request_id: str, seq: int) -> TokenDelta:
        return TokenDelta(request_id=request_id, seq=seq, text=f" t{seq}")

    first = await start_bridge(settings, instance)
    port = first.port
    try:
        async with client(f"ws://127.0.0.1:{port}") as ws:
            request_id = await ask(ws, "scripted answer")
            for seq in range(3):
                await emit(request_id, delta(request_id, seq))
            before = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
            await emit(request_id, delta(request_id, 1))  # a redelivered duplicate is dropped
            await first.stop()
        for seq in range(3, 6):  # produced while no bridge runs
            await emit(request_id, delta(request_id, seq))
        second = await start_bridge(settings, instance, port)
        try:
            async with client(f"ws://127.0.0.1:{port}") as ws:
                await ws.send(json.dumps({"type": "resume", "id": request_id, "after_seq": before[-1]["seq"]}))
                replayed = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
                for seq in range(6, 8):  # live after the resume
                    await emit(request_id, delta(request_id, seq))
                text = "".join(f" t{seq}" for seq in range(8))
                await emit(request_id, AnswerDone(request_id=request_id, text=text, deltas=8))
                live = await receive_until_end(ws)
        finally:
            await second.stop()
    finally:
        await first.stop()
        await producer.stop()
    assert [m["seq"] for m in replayed] == [3, 4, 5]
    assert [m["seq"] for m in live if m["type"] == "token"] == [6, 7]
    assert_complete_answer(before + replayed + live, request_id, streamed=False)


async def test_two_bridge_instances_each_receive_only_their_own_replies(
    worker: WorkerProcess, bridge_settings: Settings
) -> None:
    bridges = [await start_bridge(bridge_settings, f"scale{new_id()[:6]}") for _ in range(2)]
    owned: list[set[str]] = [set(), set()]
    try:

        async def one(index: int, n: int) -> None:
            async with client(f"ws://127.0.0.1:{bridges[index].port}") as ws:
                request_id = await ask(ws, f"{question_of(8)} (instance {index}, question {n})", max_tokens=32)
                owned[index].add(request_id)
                assert_complete_answer(await receive_until_end(ws), request_id)

        await asyncio.gather(*(one(index, n) for index in (0, 1) for n in range(5)))
        for index in (0, 1):
            assert owned[index] <= set(bridges[index]._requests)
            assert not owned[1 - index] & set(bridges[index]._requests)
    finally:
        for b in bridges:
            await b.stop()
    for index, b in enumerate(bridges):
        keys = await all_keys(bridge_settings, b.reply_topic)
        assert keys == owned[index], "a reply topic holds another instance's requests"
    assert bridges[0].reply_topic == bridge_settings.bridge_reply_topic(bridges[0].instance)


async def all_keys(settings: Settings, topic: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        keys: set[str] = set()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            keys.update(r.key.decode() for records in batch.values() for r in records)
        return keys
    finally:
        await consumer.stop()


async def test_a_slow_client_is_disconnected_without_delaying_others(
    worker: WorkerProcess, bridge_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    slow_bridge = await start_bridge(bridge_settings.with_changes(bridge_send_queue=32), f"slow{new_id()[:6]}")
    url = f"ws://127.0.0.1:{slow_bridge.port}"
    try:
        async with client(url, max_queue=1) as slow:  # max_queue=1: the library stops reading, TCP fills up
            request_id = await ask(slow, question_of(60))
            await asyncio.sleep(1.5)  # the answer is complete in the bridge's resume buffer
            for _ in range(2000):  # each resume replays the whole answer into the slow client's queue
                await slow.send(json.dumps({"type": "resume", "id": request_id, "after_seq": -1}))
            async with client(url) as fast:
                started = time.monotonic()
                fast_id = await ask(fast, question_of(8), max_tokens=16)
                assert_complete_answer(await receive_until_end(fast, timeout_s=10), fast_id)
                assert time.monotonic() - started < 5
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(20):
                    while True:
                        await slow.recv()
            assert slow.close_code in (1013, 1006)  # 1006 if the bridge gave up waiting for the close handshake
        assert "too slow" in caplog.text
    finally:
        await slow_bridge.stop()


async def test_sigterm_closes_sockets_with_1001_and_exits_cleanly(
    worker: WorkerProcess, bridge_settings: Settings, tmp_path: Path
) -> None:
    settings = bridge_settings.with_changes(bridge_port=free_ports(1)[0], bridge_instance=f"term{new_id()[:6]}")
    process = BridgeProcess(settings, tmp_path / "bridge.log")
    try:
        await process.wait_ready()
        async with client(process.url) as ws:
            await ws.ping()
            code = await asyncio.to_thread(process.terminate)
            await ws.wait_closed()
            assert ws.close_code == 1001
        assert code == 0, process.log()[-3000:]
    finally:
        process.terminate()


def readme_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## WebSocket protocol") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python example in the WebSocket protocol section"
    return match.group(1)


def test_the_readme_example_is_the_tested_client_file() -> None:
    assert readme_example() == (REPO_ROOT / "streams/examples/ws_client.py").read_text()


async def test_the_documented_client_example_runs_against_the_bridge(bridge: BridgeProcess, tmp_path: Path) -> None:
    script = tmp_path / "ws_client.py"
    script.write_text(readme_example())
    argv = [sys.executable, str(script), "What does the example print?", "--url", bridge.url, "--api-key", KEY]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
    result = await asyncio.to_thread(
        subprocess.run, [*argv, "--model", "llm_echo"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stderr.strip().splitlines()[-1])
    assert final["type"] == "done" and result.stdout.strip() == final["text"].strip()
