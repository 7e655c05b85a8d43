"""Streaming text generation, independent of where the model runs.

:class:`Generator` is what the query path needs from a model server: stream the answer to a conversation, piece by
piece. Triton implements it (:class:`processors.adapters.triton.TritonClient`), and so does any OpenAI-compatible
server (:class:`processors.adapters.openai_compat.OpenAICompatClient`). :class:`RoutingGenerator` sends each model
name to the generator that serves it; :class:`FallbackGenerator` tries models in order when one fails before its
first token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Literal, Protocol

import msgspec


class ChatMessage(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


def as_messages(prompt: str | Sequence[ChatMessage], *, system: str | None = None) -> list[ChatMessage]:
    messages = [ChatMessage("user", prompt)] if isinstance(prompt, str) else list(prompt)
    if system is not None and (not messages or messages[0].role != "system"):
        messages.insert(0, ChatMessage("system", system))
    return messages


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_words: tuple[str, ...] = ()
    seed: int | None = None
    # A LoRA adapter ("tenant/sha16") for ``lora_model`` only: a fallback to another model answers without it.
    lora_name: str = ""
    lora_model: str = ""


class StreamStats(msgspec.Struct, kw_only=True):
    """Filled in while a stream runs; read it after (or during) iteration.

    The models here and TensorRT-LLM in streaming mode send one response per generated token, so ``chunks`` counts
    tokens (a response held back for a partial UTF-8 character or a stop-word prefix merges two).
    """

    model: str
    started: float
    first_token_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    # The prompt's length in the model's tokens, when the model reports it (schemas.triton.PROMPT_TOKENS); else 0.
    prompt_tokens: int = 0
    cancelled: bool = False
    # Attempts made (1 + retries), and the model that failed before ``model`` took over, if any.
    attempts: int = 0
    fallback_from: str | None = None
    error: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def chunks_per_s(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.chunks < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.chunks - 1) / elapsed if elapsed > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed of this stream: tokens after the first over the time since the first."""
        return self.chunks_per_s

    @property
    def total_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started


class GenerationError(RuntimeError):
    """A model failed or could not be reached.

    ``retryable``: the same call may succeed later (server unavailable, overloaded, or a deadline passed) and no
    output was produced yet, so repeating it cannot duplicate text. ``before_output``: nothing was yielded yet, so
    another model may take over (what :class:`FallbackGenerator` does).
    """

    def __init__(self, message: str, *, retryable: bool = False, before_output: bool = True, status: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable and before_output
        self.before_output = before_output
        self.status = status


async def retried_before_output(
    attempt: Callable[[], AsyncGenerator[str, None]],
    stats: StreamStats,
    *,
    attempts: int,
    deadline: float,
    backoff_s: float,
) -> AsyncGenerator[str, None]:
    """Yield the pieces of ``attempt()``; a retryable :class:`GenerationError` (which implies nothing was yielded)
    starts another attempt after an exponential backoff, while attempts remain and the deadline leaves room.

    The retry rule every model client shares: after a piece was yielded the caller has shown it, so nothing is
    retried. Each attempt's stream is closed explicitly, so an abandoned call is cancelled now, not at GC.
    """
    for number in range(attempts):
        stats.attempts += 1
        stream = attempt()
        try:
            async for piece in stream:
                yield piece
            return
        except GenerationError as exc:
            stats.error = str(exc)
            delay = backoff_s * (2**number)
            if not exc.retryable or number + 1 >= attempts or deadline - time.monotonic() <= delay:
                raise
            await asyncio.sleep(delay)
        finally:
            await stream.aclose()


def next_read_wait(
    stats: StreamStats, *, deadline: float, first_token_timeout_s: float | None, stall_s: float, end: float
) -> tuple[float, str]:
    """How long a stream's next read may take, and what to say if it times out. The deadline rule every model client
    shares: a stream is bounded by progress, not length. Until the first token, the first-token ``deadline``
    (retries included; ``first_token_timeout_s`` caps each attempt); after it, ``stall_s`` between reads; never past
    ``end``, the cap on a whole stream."""
    now = time.monotonic()
    if stats.first_token_at is None:
        wait = max(deadline - now, 0.001)
        if first_token_timeout_s is not None:
            wait = min(wait, first_token_timeout_s)
        reason = "no first token within the deadline"
    else:
        wait, reason = stall_s, f"the stream stalled: nothing came for {stall_s:.0f}s"
    if end - now < wait:
        wait, reason = max(end - now, 0.001), "the stream ran past its time limit"
    return wait, reason


class Generator(Protocol):
    def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer's text pieces as ``model`` produces them; raise :class:`GenerationError` on failure.

        Closing or cancelling the iterator cancels the request in the model server.
        """
        ...


class RoutingGenerator:
    """A :class:`Generator` over several model servers: each model in ``routes`` streams from its own generator
    (e.g. a tier on an OpenAI-compatible server), every other model from ``default`` (Triton)."""

    def __init__(self, default: Generator, routes: Mapping[str, Generator]) -> None:
        self.default = default
        self.routes = dict(routes)

    def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncIterator[str]:
        # The chosen generator's own iterator, so closing it reaches that server (cancellation).
        generator = self.routes.get(model, self.default)
        return generator.stream(model, messages, params, request_id=request_id, stats=stats)


class FallbackGenerator:
    """Streams from the first model in ``models`` that produces output; the next one takes over on a failure
    before the first token (model not loaded, overloaded, timed out, failed). After the first token there is no
    switching: the caller has already shown that text.
    """

    def __init__(self, generator: Generator, models: Sequence[str]) -> None:
        if not models:
            raise ValueError("FallbackGenerator needs at least one model")
        self.generator = generator
        self.models = list(models)

    async def generate(
        self,
        messages: str | Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
        system: str | None = None,
    ) -> AsyncGenerator[str, None]:
        stats = stats if stats is not None else StreamStats(model=self.models[0], started=time.monotonic())
        conversation = as_messages(messages, system=system)
        failures: list[str] = []
        for index, model in enumerate(self.models):
            pieces = self.generator.stream(model, conversation, params, request_id=request_id, stats=stats)
            try:
                async for piece in pieces:
                    yield piece
                return
            except GenerationError as exc:
                if not exc.before_output or index + 1 == len(self.models):
                    raise
                failures.append(str(exc))
                stats.fallback_from = model
            finally:
                aclose = getattr(pieces, "aclose", None)
                if aclose is not None:
                    await aclose()
        raise GenerationError("; ".join(failures))  # loop always returns or raises; kept for type checkers
