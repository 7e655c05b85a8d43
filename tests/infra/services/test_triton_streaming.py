"""Triton's streaming contract through tritonclient's asyncio gRPC client: tokens stream, cancellation stops them."""

from __future__ import annotations

import asyncio
import time

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.triton import TritonClient, TritonError
from processors.generation import GenerationParams, StreamStats

WORDS = " ".join(f"w{i}" for i in range(400))


async def test_tokens_stream_one_by_one_and_the_prompt_is_counted_with_the_ensemble_contract(
    stack: Stack, stack_settings: Settings
) -> None:
    client = TritonClient(stack_settings.triton_address)
    stats = StreamStats(model="llm_echo", started=time.monotonic())
    pieces = [
        p
        async for p in client.generate(
            "llm_echo", "one two three four five six", GenerationParams(max_tokens=4), stats=stats
        )
    ]
    await client.close()
    assert pieces == ["one", " two", " three", " four"]  # max_tokens honoured, one response per token
    assert stats.chunks == 4 and stats.ttft_s is not None and not stats.cancelled
    assert stats.prompt_tokens == 6  # num_input_tokens, in llm_echo's word tokens


async def test_stop_words_end_the_stream(stack: Stack, stack_settings: Settings) -> None:
    client = TritonClient(stack_settings.triton_address)
    text = "".join(
        [p async for p in client.generate("llm_echo", "alpha beta STOP gamma", GenerationParams(stop_words=("STOP",)))]
    )
    await client.close()
    assert text == "alpha beta"


async def test_closing_the_stream_cancels_generation_inside_triton(stack: Stack, stack_settings: Settings) -> None:
    client = TritonClient(stack_settings.triton_address)
    stats = StreamStats(model="llm_echo", started=time.monotonic())
    request_id = f"cancel-{time.time_ns()}"
    stream = client.generate("llm_echo", WORDS, GenerationParams(max_tokens=400), request_id=request_id, stats=stats)
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    assert stats.cancelled
    log = stack_settings.data_path / "logs" / "triton.log"
    deadline = time.monotonic() + 10
    line = ""
    while time.monotonic() < deadline and not line:
        line = next((x for x in log.read_text().splitlines() if f"request '{request_id}' cancelled" in x), "")
        await asyncio.sleep(0.1)
    assert line, "the model never saw the cancellation"
    emitted = int(line.split("cancelled after ")[1].split()[0])
    assert emitted < 100  # stopped early: 400 tokens at 5 ms each would take 2 s
    await client.close()


async def test_concurrent_streams_interleave(stack: Stack, stack_settings: Settings) -> None:
    client = TritonClient(stack_settings.triton_address)
    params = GenerationParams(max_tokens=40)

    async def one() -> int:
        return len([p async for p in client.generate("llm_echo", WORDS, params)])

    started = time.monotonic()
    assert await one() == 40
    single = time.monotonic() - started
    started = time.monotonic()
    counts = await asyncio.gather(*(one() for _ in range(8)))
    eight = time.monotonic() - started
    await client.close()
    assert counts == [40] * 8
    assert eight < 4 * single  # served together, not one after another (8x if serialized)


async def test_unknown_model_is_a_clear_error(stack: Stack, stack_settings: Settings) -> None:
    client = TritonClient(stack_settings.triton_address)
    try:
        stream = client.generate("no_such_model", "x", GenerationParams())
        try:
            async for _ in stream:
                pass
        except TritonError as exc:
            assert "no_such_model" in str(exc)
            assert exc.before_output  # nothing was streamed
            assert not exc.retryable  # a model that does not exist will not appear on retry
        else:
            raise AssertionError("expected a TritonError")
    finally:
        await client.close()


async def test_a_steady_stream_longer_than_the_timeout_completes_and_the_stream_cap_ends_one(
    stack: Stack, stack_settings: Settings
) -> None:
    """The timeout bounds the wait for each token, not the answer's length: 400 tokens at 5 ms each take 2 s."""
    client = TritonClient(stack_settings.triton_address, timeout_s=1.0)
    capped = TritonClient(stack_settings.triton_address, timeout_s=1.0, max_stream_s=0.5)
    try:
        started = time.monotonic()
        pieces = [p async for p in client.generate("llm_echo", WORDS, GenerationParams(max_tokens=400))]
        assert len(pieces) == 400 and time.monotonic() - started > 1.0
        stats = StreamStats(model="llm_echo", started=time.monotonic())
        received = []
        try:
            async for piece in capped.generate("llm_echo", WORDS, GenerationParams(max_tokens=400), stats=stats):
                received.append(piece)
        except TritonError as exc:
            assert "ran past" in str(exc) and not exc.before_output
        else:
            raise AssertionError("the stream cap did not end the stream")
        assert 0 < len(received) < 400
    finally:
        await client.close()
        await capped.close()
