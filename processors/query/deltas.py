"""Delta batching for streamed answers.

Kafka should carry tens of events per answer, not one per token, yet the client must see text at the model's pace:
the first piece goes out at once (time to first token), later pieces are coalesced for at most ``max_delay_s``.
"""

from __future__ import annotations

import time
from typing import Literal

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
