"""A :class:`~processors.generation.Generator` for any OpenAI-compatible server (vLLM, TGI, llama.cpp's server, a
hosted API, or another ragstream bridge's ``/v1``): ``POST {base_url}/chat/completions`` with ``stream: true``.

It behaves like :class:`~processors.adapters.triton.TritonClient` so the query path cannot tell them apart:
pieces are yielded as the server streams them; ``timeout_s`` bounds the whole call and ``first_token_timeout_s``
the wait for the first piece; a failure before the first piece is retried (transient ones only) and raised with
``before_output`` so :class:`~processors.generation.FallbackGenerator` can hand over to the next model; nothing is
retried after a piece was yielded. Closing or cancelling the iterator closes the HTTP stream, which is how an
OpenAI-compatible server learns that the client stopped listening (vLLM, llama.cpp and ragstream abort the request).

The server applies its own chat template, so the conversation is sent as messages, not rendered here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp
import msgspec

from processors.generation import (
    ChatMessage,
    GenerationError,
    GenerationParams,
    StreamStats,
    next_read_wait,
    retried_before_output,
)


class OpenAIBackend(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One OpenAI-compatible server that a ragstream model name is sent to."""

    # Up to and including the API version, e.g. "http://vllm:8000/v1"; "/chat/completions" is appended.
    base_url: str
    # The server's name for the model; "" sends the ragstream model name unchanged.
    model: str = ""
    # Sent as "Authorization: Bearer <api_key>" when set.
    api_key: str = ""
    # Merged into every request body: server-specific parameters (vLLM's "top_k", ragstream's "ragstream", ...).
    extra_body: dict[str, Any] = msgspec.field(default_factory=dict)
    # Per-backend deadlines in seconds; None takes the worker's (the request timeout, no first-token limit).
    timeout_s: float | None = None
    first_token_timeout_s: float | None = None


def parse_backends(spec: str) -> dict[str, OpenAIBackend]:
    """``{"model name": {"base_url": ..., ...}, ...}`` (JSON) -> backends; a bad value fails with the reason."""
    if not spec.strip():
        return {}
    try:
        backends = msgspec.json.decode(spec, type=dict[str, OpenAIBackend])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"openai_backends: {exc}") from None
    for name, backend in backends.items():
        if not backend.base_url.startswith(("http://", "https://")):
            raise ValueError(f"openai_backends: {name}: base_url must start with http:// or https://")
    return backends


class OpenAICompatError(GenerationError):
    """The server failed, refused, or could not be reached (see :class:`GenerationError`)."""


# HTTP statuses after which the same request may succeed if sent again.
_TRANSIENT_HTTP = {408, 409, 425, 429, 500, 502, 503, 504}
_MAX_ERROR_BODY = 64 * 1024


def request_body(model: str, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
    """The chat completions request for these generation parameters (OpenAI allows at most 4 stop strings)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "stream": True,
        # A last chunk with the token counts, for the answer's usage record (a backend's extra_body can override it).
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.stop_words:
        body["stop"] = list(params.stop_words[:4])
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _error_message(status: int, raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the start of the body."""
    try:
        error = json.loads(raw).get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"HTTP {status}: {error['message']}"
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}: {raw[:200].decode(errors='replace').strip()}"


class OpenAICompatClient:
    """Streams chat completions from one OpenAI-compatible server. Create once per process; safe for concurrent use.

    Deadlines and retries as :class:`~processors.adapters.triton.TritonClient`: ``timeout_s`` for the first piece
    (``first_token_timeout_s`` per attempt) and then between pieces, ``max_stream_s`` for a whole stream,
    ``retries`` transient failures before the first piece.
    """

    def __init__(
        self,
        backend: OpenAIBackend,
        *,
        timeout_s: float = 30.0,
        first_token_timeout_s: float | None = None,
        max_stream_s: float = 600.0,
        retries: int = 2,
        backoff_s: float = 0.1,
    ) -> None:
        self.max_stream_s = max_stream_s
        self.backend = backend
        self.url = backend.base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = backend.timeout_s or timeout_s
        self.first_token_timeout_s = backend.first_token_timeout_s or first_token_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            headers = {"Accept": "text/event-stream"}
            if self.backend.api_key:
                headers["Authorization"] = f"Bearer {self.backend.api_key}"
            # Deadlines are enforced per read below; the session itself never times a call out.
            self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        request_id: str = "",
        stats: StreamStats | None = None,
    ) -> AsyncGenerator[str, None]:
        """:class:`~processors.generation.Generator`: stream ``model``'s answer (sent as the backend's model name)."""
        stats = stats if stats is not None else StreamStats(model=model, started=time.monotonic())
        stats.model = model
        body = {**request_body(self.backend.model or model, messages, params), **self.backend.extra_body}
        deadline = time.monotonic() + self.timeout_s
        pieces = retried_before_output(
            lambda: self._stream_once(model, body, request_id, stats, deadline),
            stats,
            attempts=1 + self.retries,
            deadline=deadline,
            backoff_s=self.backoff_s,
        )
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()

    async def _stream_once(
        self, model: str, body: dict[str, Any], request_id: str, stats: StreamStats, deadline: float
    ) -> AsyncGenerator[str, None]:
        headers = {"X-Request-Id": request_id} if request_id else None
        response: aiohttp.ClientResponse | None = None
        finished = False
        end = time.monotonic() + self.max_stream_s
        wait, reason = self._wait(stats, deadline, end)
        try:
            async with asyncio.timeout(wait):
                response = await self._client().post(self.url, json=body, headers=headers)
            if response.status != 200:
                raw = await response.content.read(_MAX_ERROR_BODY)
                raise OpenAICompatError(
                    f"{model}: {_error_message(response.status, raw)}",
                    retryable=response.status in _TRANSIENT_HTTP,
                    status=f"HTTP_{response.status}",
                )
            ended = False  # "[DONE]" or a finish_reason: the server meant to stop here
            data: list[str] = []
            while True:
                wait, reason = self._wait(stats, deadline, end)
                async with asyncio.timeout(wait):
                    raw_line = await response.content.readline()
                if not raw_line:
                    break
                line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                    continue
                if line or not data:
                    continue  # comments, "event:" and "id:" lines; blank lines between events
                event, data = "\n".join(data), []
                if event.strip() == "[DONE]":
                    ended = True
                    break
                piece, finish = self._parse(model, event, stats)
                ended = ended or finish
                if piece:
                    if stats.first_token_at is None:
                        stats.first_token_at = time.monotonic()
                    stats.chunks += 1
                    yield piece
            if not ended:
                raise OpenAICompatError(
                    f"{model}: the stream ended before the answer did (server stopped?)",
                    retryable=True,
                    before_output=stats.chunks == 0,
                    status="STREAM_ENDED",
                )
            finished = True
        except TimeoutError:
            raise OpenAICompatError(
                f"{model}: {reason}",
                retryable=True,
                before_output=stats.chunks == 0,
                status="DEADLINE_EXCEEDED",
            ) from None
        except asyncio.CancelledError:
            stats.cancelled = True
            raise
        except aiohttp.ClientError as exc:
            raise OpenAICompatError(
                f"{model}: {type(exc).__name__}: {exc}",
                retryable=True,
                before_output=stats.chunks == 0,
                status="UNAVAILABLE",
            ) from None
        finally:
            stats.finished_at = time.monotonic()
            if response is not None:
                if not finished:
                    # Stopped early (caller closed the iterator, cancelled, or an error): closing the connection is
                    # how the server learns to stop generating.
                    if not isinstance(sys.exc_info()[1], OpenAICompatError):
                        stats.cancelled = True
                    response.close()
                else:
                    response.release()

    def _wait(self, stats: StreamStats, deadline: float, end: float) -> tuple[float, str]:
        return next_read_wait(
            stats, deadline=deadline, first_token_timeout_s=self.first_token_timeout_s, stall_s=self.timeout_s, end=end
        )

    @staticmethod
    def _parse(model: str, event: str, stats: StreamStats) -> tuple[str, bool]:
        """``(content piece, finished)`` of one ``chat.completion.chunk``; an error event raises."""
        try:
            chunk = json.loads(event)
        except ValueError:
            raise OpenAICompatError(
                f"{model}: a stream event is not JSON: {event[:100]!r}", before_output=stats.chunks == 0
            ) from None
        if not isinstance(chunk, dict):
            return "", False
        error = chunk.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            server_side = isinstance(error, dict) and error.get("type") == "server_error"
            raise OpenAICompatError(
                f"{model}: {message}",
                retryable=server_side,
                before_output=stats.chunks == 0,
                status=str(error.get("code") or "STREAM_ERROR") if isinstance(error, dict) else "STREAM_ERROR",
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            stats.prompt_tokens = usage["prompt_tokens"]
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return "", False  # e.g. the usage chunk
        delta = choices[0].get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        return (content if isinstance(content, str) else ""), choices[0].get("finish_reason") is not None
