"""The semantic cache on real Redis 8 vector sets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from infra.settings import Settings
from infra.stack import Stack
from processors.adapters.semantic_cache import SemanticCache, question_signature
from schemas.events import AnswerDone, Citation


def _unit(seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(v: np.ndarray, cosine: float, seed: int = 99) -> np.ndarray:
    """A unit vector with the given cosine to ``v``."""
    noise = np.random.default_rng(seed).normal(size=v.shape).astype(np.float32)
    noise -= noise.dot(v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def _done(text: str, doc_ids: list[str]) -> AnswerDone:
    cites = [Citation(number=i + 1, chunk_id=f"{d}#0", doc_id=d) for i, d in enumerate(doc_ids)]
    return AnswerDone(request_id="r", text=text, citations=cites, model="llm_small")


@pytest.fixture
async def cache(stack: Stack, stack_settings: Settings) -> AsyncIterator[SemanticCache]:
    client = aioredis.Redis.from_url(stack_settings.redis_address)
    prefix = f"test:{np.random.default_rng().integers(1 << 30)}"
    yield SemanticCache(client, threshold=0.9, prefix=prefix)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_similar_question_hits_and_dissimilar_misses(cache: SemanticCache) -> None:
    v = _unit(1)
    await cache.store("acme", "rag_qa:1", "How do I sort a list?", v, _done("Use sorted() [1].", ["doc-a"]))
    hit = await cache.lookup("acme", "rag_qa:1", "How can I sort a list?", _near(v, 0.95))
    assert hit is not None and hit.answer.text == "Use sorted() [1]."
    assert 0.94 < hit.similarity < 0.96  # reported as cosine, not Redis' (1 + cos) / 2
    assert await cache.lookup("acme", "rag_qa:1", "How can I sort a list?", _near(v, 0.8)) is None


async def test_tenants_and_prompt_versions_never_share_entries(cache: SemanticCache) -> None:
    v = _unit(2)
    await cache.store("acme", "rag_qa:1", "What is a tuple?", v, _done("An immutable sequence [1].", ["d"]))
    assert await cache.lookup("acme", "rag_qa:1", "What is a tuple?", v) is not None
    assert await cache.lookup("globex", "rag_qa:1", "What is a tuple?", v) is None
    assert await cache.lookup("acme", "rag_qa:2", "What is a tuple?", v) is None


async def test_a_question_and_its_negation_do_not_share_an_answer(cache: SemanticCache) -> None:
    v = _unit(3)
    await cache.store("acme", "p:1", "Should I use a list here?", v, _done("Yes [1].", ["d"]))
    # Even with an identical embedding, a negated question must miss.
    assert await cache.lookup("acme", "p:1", "Should I not use a list here?", v) is None
    assert await cache.lookup("acme", "p:1", "Shouldn't I use a list here?", v) is None
    assert await cache.lookup("acme", "p:1", "Should I use a list here?", v) is not None


async def test_numbers_must_match(cache: SemanticCache) -> None:
    v = _unit(4)
    await cache.store("acme", "p:1", "What changed in Python 3.11?", v, _done("Faster CPython [1].", ["d"]))
    assert await cache.lookup("acme", "p:1", "What changed in Python 3.12?", v) is None


async def test_invalidating_a_cited_document_removes_the_entry(cache: SemanticCache) -> None:
    v, w = _unit(5), _unit(6)
    await cache.store("acme", "p:1", "q1", v, _done("a [1]", ["doc-1", "doc-2"]))
    await cache.store("acme", "p:1", "q2", w, _done("b [1]", ["doc-3"]))
    assert await cache.invalidate_documents("acme", ["doc-2"]) == 1
    assert await cache.lookup("acme", "p:1", "q1", v) is None
    assert await cache.lookup("acme", "p:1", "q2", w) is not None
    assert await cache.invalidate_documents("globex", ["doc-3"]) == 0  # other tenant: untouched
    assert await cache.lookup("acme", "p:1", "q2", w) is not None


async def test_an_entry_is_a_hit_until_its_ttl_expires_then_a_miss_and_removed(cache: SemanticCache) -> None:
    v = _unit(7)
    short = SemanticCache(cache.redis, threshold=0.9, ttl_s=1, prefix=cache.prefix)
    await short.store("acme", "p:1", "q", v, _done("a [1]", ["d"]))
    entry = await _only_entry(cache)
    assert 0 < await cache.redis.pttl(f"{cache.prefix}:e:{entry}") <= 1000  # Redis itself expires the entry
    assert await short.lookup("acme", "p:1", "q", v) is not None
    await asyncio.sleep(1.3)  # nothing deletes it but the TTL
    assert await short.lookup("acme", "p:1", "q", v) is None
    members = await cache.redis.execute_command("VCARD", f"{cache.prefix}:vs:acme:p:1")
    assert members == 0  # the stale element was dropped from the vector set on the miss


async def _only_entry(cache: SemanticCache) -> str:
    keys = [k.decode() async for k in cache.redis.scan_iter(f"{cache.prefix}:e:*")]
    assert len(keys) == 1
    return keys[0].rsplit(":", 1)[1]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("How do I enable logging?", "How can I turn on logging?", True),
        ("How do I enable logging?", "How do I not enable logging?", False),
        ("Is it thread-safe?", "Isn't it thread-safe?", False),
        ("Never use eval, why?", "Why should you never use eval?", True),
        ("Limit of 10 items", "Limit of 20 items", False),
        ("What does 'yield' do?", "What does 'return' do?", False),
    ],
)
def test_question_signature(a: str, b: str, same: bool) -> None:
    assert (question_signature(a) == question_signature(b)) is same
