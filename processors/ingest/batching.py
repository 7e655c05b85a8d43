"""Coalesce concurrent single-item calls into batch calls.

Faust agents hand a Stage one message at a time; running an agent with ``concurrency=N`` gives N messages in flight,
and each handler awaits ``submit(item)``. The batcher turns them into one Triton request or one Milvus upsert, and
each handler returns only when its own item has been processed, so the Kafka offset is committed only after the
work is done (at-least-once, no in-memory loss on a crash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Flush when ``max_batch`` items wait or ``max_wait_s`` passed since the first; ``max_flushes`` at once.

    A batch is cut only when a flush slot is free: while every slot is busy, items keep accumulating, so a slow
    downstream (the embedder under load) gets full batches rather than one small batch per timer tick.
    """

    def __init__(
        self,
        flush: Callable[[list[In]], Awaitable[Sequence[Out]]],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        max_flushes: int = 1,
    ) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(max_flushes)
        self._waiting_for_slot = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._arm()
        return await future

    def _arm(self) -> None:
        """Start a flush now if a batch is full, else make sure the timer will start one."""
        if not self._pending:
            return
        if len(self._pending) >= self.max_batch:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._start)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._waiting_for_slot:
            return  # the flush already waiting for a slot takes what is pending when it gets one
        self._waiting_for_slot = True
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        async with self._slots:
            self._waiting_for_slot = False
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self._arm()
            if not batch:
                return
            try:
                results = await self._flush([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch flush returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
