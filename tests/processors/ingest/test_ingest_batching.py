"""MicroBatcher: concurrent single submits become batch calls, each caller gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from processors.ingest.batching import MicroBatcher


async def test_each_caller_gets_its_own_result_from_a_shared_batch() -> None:
    seen: list[list[int]] = []

    async def square(items: list[int]) -> list[int]:
        seen.append(items)
        return [i * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(square, max_batch=8, max_wait_s=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * i for i in range(20)]
    assert [len(b) for b in seen] == [8, 8, 4]
    assert (batcher.batches, batcher.items) == (3, 20)


async def test_items_arriving_while_every_slot_is_busy_wait_for_a_full_batch() -> None:
    """A slow flush must not be followed by one small batch per timer tick."""
    release = asyncio.Event()
    sizes: list[int] = []

    async def slow(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            await release.wait()
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch=16, max_wait_s=0.001, max_flushes=1)
    first = asyncio.ensure_future(batcher.submit(-1))
    await asyncio.sleep(0.01)  # the first flush now holds the only slot
    later = []
    for i in range(12):  # trickle in, many timer periods apart
        later.append(asyncio.ensure_future(batcher.submit(i)))
        await asyncio.sleep(0.003)
    release.set()
    assert await first == -1
    assert await asyncio.gather(*later) == list(range(12))
    assert sizes == [1, 12]


async def test_a_failed_flush_fails_only_its_own_callers() -> None:
    async def flaky(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("bad item")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch=4, max_wait_s=0.01)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(8)), return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes[:4])
    assert outcomes[4:] == [4, 5, 6, 7]


async def test_a_flush_returning_the_wrong_count_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher: MicroBatcher[int, int] = MicroBatcher(short, max_batch=2, max_wait_s=0.001)
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
