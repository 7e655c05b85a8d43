"""Generation stage: stream a model's answer as batched :class:`TokenDelta` events and one :class:`AnswerDone`.

Kafka should carry tens of events per answer, not one per token, yet the client must see text at the model's pace:
the first piece goes out at once (time to first token), later pieces are coalesced for at most ``max_delay_s``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from processors.triton_client import GenerationParams, StreamStats, TritonClient
from schemas.events import AnswerDone, Citation, PromptRef, TokenDelta, Usage

FinishReason = Literal["stop", "length", "cancelled", "refused", "blocked"]


class DeltaBatcher:
    """Coalesces text pieces: flush on the first piece, then when ``max_delay_s`` or ``max_chars`` is reached."""

    def __init__(self, *, max_delay_s: float = 0.05, max_chars: int = 256) -> None:
        self.max_delay_s = max_delay_s
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._pieces = 0
        self._size = 0
        self._since: float | None = None
        self._flushed_once = False

    def add(self, piece: str, now: float | None = None) -> tuple[str, int] | None:
        """Buffer ``piece``; return ``(text, pieces)`` when it is time to send them."""
        now = time.monotonic() if now is None else now
        self._parts.append(piece)
        self._pieces += 1
        self._size += len(piece)
        if self._since is None:
            self._since = now
        if not self._flushed_once or self._size >= self.max_chars or now - self._since >= self.max_delay_s:
            self._flushed_once = True
            return self.flush()
        return None

    def flush(self) -> tuple[str, int] | None:
        if not self._parts:
            return None
        text, pieces = "".join(self._parts), self._pieces
        self._parts, self._pieces, self._size, self._since = [], 0, 0, None
        return text, pieces


class Generator:
    """Turns one prompt into the answer events for one request."""

    def __init__(self, client: TritonClient, *, max_delay_s: float = 0.05, max_chars: int = 256) -> None:
        self.client = client
        self.max_delay_s = max_delay_s
        self.max_chars = max_chars

    async def answer(
        self,
        *,
        request_id: str,
        model: str,
        prompt: str,
        params: GenerationParams,
        citations: list[Citation] | None = None,
        prompt_ref: PromptRef | None = None,
        timings_ms: dict[str, float] | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[TokenDelta | AnswerDone]:
        stats = StreamStats(model=model, started=time.monotonic())
        batcher = DeltaBatcher(max_delay_s=self.max_delay_s, max_chars=self.max_chars)
        seq = 0
        parts: list[str] = []
        finish: FinishReason = "stop"
        pieces = self.client.generate(model, prompt, params, request_id=request_id, stats=stats)
        try:
            async for piece in pieces:
                parts.append(piece)
                ready = batcher.add(piece)
                if ready is not None:
                    yield TokenDelta(request_id=request_id, seq=seq, text=ready[0], tokens=ready[1])
                    seq += 1
                if is_cancelled():
                    finish = "cancelled"
                    break
        finally:
            await pieces.aclose()
        rest = batcher.flush()
        if rest is not None:
            yield TokenDelta(request_id=request_id, seq=seq, text=rest[0], tokens=rest[1])
            seq += 1
        if finish == "stop" and stats.chunks >= params.max_tokens:
            finish = "length"
        timings = dict(timings_ms or {})
        if stats.ttft_s is not None:
            timings["ttft_model"] = stats.ttft_s * 1000.0
        if stats.finished_at is not None:
            timings["generate"] = (stats.finished_at - stats.started) * 1000.0
        yield AnswerDone(
            request_id=request_id,
            text="".join(parts),
            citations=citations or [],
            model=model,
            prompt_ref=prompt_ref,
            finish_reason=finish,
            usage=Usage(completion_tokens=stats.chunks),
            timings_ms=timings,
            deltas=seq,
        )
