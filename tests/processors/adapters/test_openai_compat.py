"""The OpenAI-compatible generator against a real OpenAI-compatible server: a ragstream bridge's ``/v1`` on the
session stack (which answers through the worker with ``llm_echo``). Streaming, cancellation, deadlines, errors, and
the fallback when the server is stopped before or during a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.settings import Settings
from infra.stack import Stack, free_ports
from processors.adapters.openai_compat import OpenAIBackend, OpenAICompatClient, OpenAICompatError, parse_backends
from processors.adapters.triton import TritonClient
from processors.generation import (
    ChatMessage,
    FallbackGenerator,
    GenerationParams,
    RoutingGenerator,
    StreamStats,
)
from schemas.codec import EventDecoder
from schemas.events import CancelRequest, QueryRequest, new_id
from schemas.topics import Topic
from tests.conftest import KEY, LONG_QUESTION, QUESTION, BridgeProcess, WorkerProcess
from tests.streams.bridge.test_bridge_server import TopicTail

REMOTE = "remote_tier"  # the ragstream model name routed to the OpenAI-compatible server


def start_server(settings: Settings, tenant: str, log: Path) -> BridgeProcess:
    """A bridge process of its own: the OpenAI-compatible server these tests may stop."""
    own = settings.with_changes(
        bridge_port=free_ports(1)[0], api_keys=f"{KEY}:{tenant}", bridge_instance=f"oai{new_id()[:8]}"
    )
    return BridgeProcess(own, log)


@pytest.fixture(scope="module")
async def server(
    worker: WorkerProcess,
    corpus: dict[str, Path],
    stack_settings: Settings,
    tenants: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[BridgeProcess]:
    process = start_server(stack_settings, tenants[0], tmp_path_factory.mktemp("oai") / "bridge.log")
    try:
        await process.wait_ready()
        yield process
    finally:
        process.terminate()


def backend(server: BridgeProcess, **changes: object) -> OpenAIBackend:
    values: dict[str, object] = {
        "base_url": f"http://127.0.0.1:{server.settings.bridge_port}/v1",
        "api_key": KEY,
        "model": "llm_echo",
        # Every call must reach the model: a cached answer would arrive whole, in one piece.
        "extra_body": {"ragstream": {"use_cache": False}},
        **changes,
    }
    return OpenAIBackend(**values)  # type: ignore[arg-type]


@pytest.fixture
async def triton(stack: Stack, stack_settings: Settings) -> AsyncIterator[TritonClient]:
    client = TritonClient(stack_settings.triton_address, timeout_s=60.0)
    yield client
    await client.close()


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


def test_backends_parse_from_json_and_bad_ones_fail_with_the_reason() -> None:
    parsed = parse_backends('{"big": {"base_url": "http://h:8000/v1", "model": "m", "first_token_timeout_s": 5}}')
    assert parsed["big"].model == "m" and parsed["big"].first_token_timeout_s == 5
    assert parse_backends("") == {}
    with pytest.raises(ValueError, match="base_url"):
        parse_backends('{"big": {"model": "m"}}')
    with pytest.raises(ValueError, match="http"):
        parse_backends('{"big": {"base_url": "h:8000"}}')
    with pytest.raises(ValueError, match="unknown"):
        parse_backends('{"big": {"base_url": "http://h", "temprature": 1}}')


async def test_an_answer_streams_piece_by_piece_from_the_server(server: BridgeProcess) -> None:
    client = OpenAICompatClient(backend(server), timeout_s=60.0)
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    try:
        params = GenerationParams(max_tokens=400)  # room for the whole echo, question included
        pieces = [p async for p in client.stream(REMOTE, ask(QUESTION), params, stats=stats)]
    finally:
        await client.close()
    assert len(pieces) > 1 and stats.chunks == len(pieces)
    assert "frobnicator" in "".join(pieces).lower()
    assert stats.prompt_tokens > len(QUESTION.split())  # from the server's usage chunk (include_usage)
    assert stats.model == REMOTE and stats.attempts == 1 and not stats.cancelled
    assert stats.ttft_s is not None and stats.total_s is not None and stats.total_s >= stats.ttft_s


_cancels: EventDecoder[CancelRequest] = EventDecoder(CancelRequest)


async def test_closing_the_stream_makes_the_server_cancel_its_request(
    server: BridgeProcess, stack_settings: Settings
) -> None:
    client = OpenAICompatClient(backend(server), timeout_s=60.0)
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    async with TopicTail(stack_settings, stack_settings.topic(Topic.CANCELLATIONS)) as tail:
        pieces = client.stream(REMOTE, ask(LONG_QUESTION), GenerationParams(max_tokens=600), stats=stats)
        try:
            got = [await anext(pieces), await anext(pieces)]
            await pieces.aclose()  # the caller stops early: the HTTP stream is closed
        finally:
            await client.close()
        value = await tail.wait_for(lambda _key, value: _cancels.decode(value).reason == "disconnect")
    assert got and stats.cancelled and stats.chunks == 2
    assert _cancels.decode(value).reason == "disconnect"


async def test_a_wrong_key_fails_before_output_and_is_not_retried(server: BridgeProcess) -> None:
    client = OpenAICompatClient(backend(server, api_key="wrong"), timeout_s=30.0)
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    try:
        with pytest.raises(OpenAICompatError) as failed:
            async for _ in client.stream(REMOTE, ask(QUESTION), GenerationParams(), stats=stats):
                pass
    finally:
        await client.close()
    assert failed.value.status == "HTTP_401" and "invalid API key" in str(failed.value)
    assert failed.value.before_output and not failed.value.retryable and stats.attempts == 1


async def test_no_first_token_within_its_deadline_is_retryable(server: BridgeProcess) -> None:
    client = OpenAICompatClient(backend(server), timeout_s=30.0, first_token_timeout_s=0.001, retries=0)
    try:
        with pytest.raises(OpenAICompatError) as late:
            async for _ in client.stream(REMOTE, ask(QUESTION), GenerationParams()):
                pass
    finally:
        await client.close()
    assert late.value.status == "DEADLINE_EXCEEDED" and late.value.retryable and late.value.before_output


async def test_no_server_is_retried_then_the_fallback_model_answers(triton: TritonClient) -> None:
    nowhere = OpenAIBackend(base_url=f"http://127.0.0.1:{free_ports(1)[0]}/v1", model="llm_echo")
    client = OpenAICompatClient(nowhere, timeout_s=10.0, retries=2, backoff_s=0.01)
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    generator = FallbackGenerator(RoutingGenerator(triton, {REMOTE: client}), [REMOTE, "llm_echo"])
    try:
        text = "".join([p async for p in generator.generate("alpha beta gamma", GenerationParams(), stats=stats)])
    finally:
        await client.close()
    assert text.split() == ["alpha", "beta", "gamma"]
    assert stats.fallback_from == REMOTE and stats.model == "llm_echo"
    assert stats.attempts == 3 + 1  # three tries at the server, then one at Triton


_journal: EventDecoder[QueryRequest] = EventDecoder(QueryRequest)


async def test_a_server_killed_before_its_first_token_hands_the_request_to_the_fallback(
    worker: WorkerProcess,
    corpus: dict[str, Path],
    stack_settings: Settings,
    tenants: tuple[str, str],
    triton: TritonClient,
    tmp_path: Path,
) -> None:
    doomed = start_server(stack_settings, tenants[0], tmp_path / "bridge.log")
    await doomed.wait_ready()
    client = OpenAICompatClient(backend(doomed), timeout_s=30.0, retries=2, backoff_s=0.05)
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    generator = FallbackGenerator(RoutingGenerator(triton, {REMOTE: client}), [REMOTE, "llm_echo"])
    reply_topic = doomed.settings.bridge_reply_topic(doomed.settings.bridge_instance)
    try:
        async with TopicTail(stack_settings, reply_topic) as journal:

            async def collect() -> str:
                return "".join([p async for p in generator.generate(QUESTION, GenerationParams(), stats=stats)])

            answer = asyncio.create_task(collect())
            # The server has taken the request (journalled it) and is preparing it: no token yet. It dies now.
            await journal.wait_for(lambda _key, value: isinstance(_journal.decode(value), QueryRequest))
            doomed.proc.kill()
            text = await asyncio.wait_for(answer, 60)
    finally:
        doomed.terminate()
        await client.close()
    assert stats.fallback_from == REMOTE and stats.model == "llm_echo"
    assert text.split()[:3] == QUESTION.split()[:3]  # llm_echo streams the question back


async def test_a_server_stopped_mid_stream_ends_the_answer_with_an_error_and_the_next_falls_back(
    worker: WorkerProcess,
    corpus: dict[str, Path],
    stack_settings: Settings,
    tenants: tuple[str, str],
    triton: TritonClient,
    tmp_path: Path,
) -> None:
    stopping = start_server(stack_settings, tenants[0], tmp_path / "bridge.log")
    await stopping.wait_ready()
    client = OpenAICompatClient(backend(stopping), timeout_s=60.0, retries=2, backoff_s=0.05)
    generator = FallbackGenerator(RoutingGenerator(triton, {REMOTE: client}), [REMOTE, "llm_echo"])
    stats = StreamStats(model=REMOTE, started=time.monotonic())
    try:
        pieces = generator.generate(LONG_QUESTION, GenerationParams(max_tokens=800), stats=stats)
        shown = [await anext(pieces)]
        await asyncio.to_thread(stopping.terminate)  # SIGTERM, as an orchestrator stops a server
        with pytest.raises(OpenAICompatError) as cut:
            async for piece in pieces:
                shown.append(piece)
        # Text was shown: no other model may take over and repeat it; the caller gets an error, not silence.
        assert not cut.value.before_output and not cut.value.retryable
        assert stats.fallback_from is None and stats.chunks == len(shown)

        after = StreamStats(model=REMOTE, started=time.monotonic())
        text = "".join([p async for p in generator.generate("delta epsilon", GenerationParams(), stats=after)])
        assert text.split() == ["delta", "epsilon"] and after.fallback_from == REMOTE and after.model == "llm_echo"
    finally:
        stopping.terminate()
        await client.close()
