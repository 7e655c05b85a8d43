"""The generation client: chat rendering, deadlines, retries and the fallback model."""

from __future__ import annotations

import time

import pytest

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.chat_formats import model_info, render_chat
from processors.adapters.triton import TritonClient, TritonError
from processors.generation import ChatMessage, FallbackGenerator, GenerationParams, StreamStats, as_messages


def test_chatml_rendering() -> None:
    text = render_chat("llm_small", [ChatMessage("system", "S"), ChatMessage("user", "Q")])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    # Without a system turn the model's own default system prompt is inserted, as its template does.
    assert render_chat("llm_large", [ChatMessage("user", "Q")]).startswith("<|im_start|>system\nYou are Qwen")


def test_llama3_rendering_for_production_leaves_begin_of_text_to_the_preprocessor() -> None:
    text = render_chat("ensemble", as_messages("Q", system="S"))
    assert text == (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert model_info("ensemble").stop_words == ("<|eot_id|>",)


def test_unknown_and_echo_models_get_plain_text() -> None:
    assert render_chat("llm_echo", [ChatMessage("user", "a b c")]) == "a b c"
    assert model_info("something_else").format == "plain"


@pytest.fixture
async def client(stack: Stack, stack_settings: Settings):
    triton = TritonClient(stack_settings.triton_address, timeout_s=60.0, retries=1, backoff_s=0.05)
    yield triton
    await triton.close()


@pytest.mark.services
async def test_unknown_model_fails_before_output_and_is_not_retried(client: TritonClient) -> None:
    stats = StreamStats(model="nope", started=time.monotonic())
    with pytest.raises(TritonError) as info:
        async for _ in client.generate("no_such_model", "hi", GenerationParams(max_tokens=4), stats=stats):
            pass
    assert info.value.before_output and not info.value.retryable
    assert stats.attempts == 1


@pytest.mark.services
async def test_fallback_model_takes_over_before_the_first_token(client: TritonClient) -> None:
    stats = StreamStats(model="", started=time.monotonic())
    generator = FallbackGenerator(client, ["no_such_model", "llm_echo"])
    text = "".join(
        [p async for p in generator.generate("alpha beta gamma", GenerationParams(max_tokens=8), stats=stats)]
    )
    assert text.split() == ["alpha", "beta", "gamma"]
    assert stats.model == "llm_echo" and stats.fallback_from == "no_such_model"
    assert stats.ttft_s is not None


@pytest.mark.services
async def test_a_missed_first_token_deadline_is_retryable_and_the_next_model_takes_over(
    client: TritonClient, stack_settings: Settings
) -> None:
    assert await client.is_ready("llm_small"), "llm_small is not loaded"
    long_prompt = render_chat("llm_small", [ChatMessage("user", "word " * 1500)])
    with pytest.raises(TritonError) as info:
        async for _ in client.generate(
            "llm_small", long_prompt, GenerationParams(max_tokens=4), first_token_timeout_s=0.001, retries=0
        ):
            pass
    assert info.value.retryable and info.value.before_output and info.value.status == "DEADLINE_EXCEEDED"
    # Through the fallback: llm_small cannot prefill 1500 words within 0.3 s on a CPU, llm_echo answers at once.
    hurried = TritonClient(stack_settings.triton_address, timeout_s=60.0, first_token_timeout_s=0.3, retries=0)
    try:
        stats = StreamStats(model="", started=time.monotonic())
        generator = FallbackGenerator(hurried, ["llm_small", "llm_echo"])
        text = "".join(
            [p async for p in generator.generate("word " * 1500, GenerationParams(max_tokens=4), stats=stats)]
        )
    finally:
        await hurried.close()
    assert text.split() == ["word"] * 4
    assert stats.fallback_from == "llm_small" and stats.model == "llm_echo" and stats.attempts == 2


@pytest.mark.services
async def test_streams_report_ttft_and_tokens_per_second(client: TritonClient) -> None:
    stats = StreamStats(model="llm_echo", started=time.monotonic())
    pieces = [
        p async for p in client.generate("llm_echo", "one two three four five six", GenerationParams(), stats=stats)
    ]
    assert len(pieces) == 6 and stats.chunks == 6 and stats.attempts == 1
    assert stats.ttft_s is not None and stats.ttft_s > 0
    assert stats.tokens_per_s is not None and stats.tokens_per_s > 10
    assert not stats.cancelled
