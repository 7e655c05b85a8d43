"""Semantic answer cache on Redis 8 vector sets (VADD / VSIM ... FILTER).

Layout, all under ``{prefix}``:
- ``vs:{tenant}:{prompt}``: one vector set per tenant and prompt version; an element per cached answer, with the
  question's *signature* as a filterable attribute. Tenants and prompt versions never share a set.
- ``e:{id}``: the cached answer (msgpack), with a TTL. An element whose entry has expired is a miss and is removed.
- ``d:{tenant}:{doc_id}``: ids of entries that cited the document, so a changed document invalidates them.

Embeddings alone put "how do I enable X" and "how do I not enable X" close together. A hit therefore also needs an
equal signature: negation parity and the numbers and quoted strings in the question. Paraphrases keep it; a
negation or a different number changes it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from processors.protocols import CachedAnswer, CacheHit
from schemas.events import AnswerDone

_NEGATIONS = {
    "not", "no", "never", "none", "nor", "neither", "without", "cannot", "nothing", "nobody", "nowhere", "except",
    "exclude", "excluding", "avoid", "prevent", "stop", "disable", "disabling", "unlike", "instead",
}  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"[\"'`]([^\"'`]{1,80})[\"'`]")


def question_signature(question: str) -> str:
    """What two questions must share, beyond being close in meaning, to share an answer."""
    lowered = question.lower()
    words = _WORD.findall(lowered)
    negations = sum(1 for w in words if w in _NEGATIONS or w.endswith("n't"))
    numbers = sorted(set(_NUMBER.findall(lowered)))
    quoted = sorted({q.strip() for q in _QUOTED.findall(lowered)})
    return f"n{negations % 2}|{','.join(numbers)}|{'|'.join(quoted)}"


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CachedAnswer).decode


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class SemanticCache:
    """The :class:`~processors.protocols.AnswerCache` on Redis 8 vector sets (layout in the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        threshold: float = 0.9,
        ttl_s: int = 24 * 3600,
        prefix: str = "rs:cache:v1",
    ) -> None:
        self.redis = redis
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.prefix = prefix

    def _set_key(self, tenant: str, prompt_key: str) -> str:
        return f"{self.prefix}:vs:{tenant}:{prompt_key}"

    def _doc_key(self, tenant: str, doc_id: str) -> str:
        return f"{self.prefix}:d:{tenant}:{doc_id}"

    def _entry_key(self, entry_id: str) -> str:
        return f"{self.prefix}:e:{entry_id}"

    @staticmethod
    def _values(vector: npt.NDArray[np.float32] | Sequence[float]) -> list[str]:
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        return [str(len(array)), *(repr(float(x)) for x in array)]

    async def lookup(
        self, tenant: str, prompt_key: str, question: str, vector: npt.NDArray[np.float32] | Sequence[float]
    ) -> CacheHit | None:
        """The most similar live entry with the same signature, if it is similar enough."""
        set_key = self._set_key(tenant, prompt_key)
        signature = msgspec.json.encode(question_signature(question)).decode()
        raw = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "VSIM", set_key, "VALUES", *self._values(vector), "WITHSCORES", "COUNT", 3,
            "FILTER", f".sig == {signature}",
        )  # fmt: skip
        if not raw:
            return None
        pairs = list(raw.items()) if isinstance(raw, dict) else list(zip(raw[::2], raw[1::2], strict=True))
        for element, score in sorted(pairs, key=lambda pair: float(pair[1]), reverse=True):
            # VSIM reports (1 + cosine) / 2; the threshold is on cosine.
            similarity = 2.0 * float(score) - 1.0
            if similarity < self.threshold:
                return None
            entry_id = element.decode() if isinstance(element, bytes) else str(element)
            payload = await self.redis.get(self._entry_key(entry_id))
            if payload is None:  # expired or invalidated: drop the stale element and look at the next one
                await self.redis.execute_command("VREM", set_key, entry_id)  # type: ignore[no-untyped-call]
                continue
            return CacheHit(entry_id=entry_id, similarity=similarity, answer=_decode(_as_bytes(payload)))
        return None

    async def store(
        self,
        tenant: str,
        prompt_key: str,
        question: str,
        vector: npt.NDArray[np.float32] | Sequence[float],
        answer: AnswerDone,
    ) -> str:
        entry_id = uuid.uuid4().hex
        set_key = self._set_key(tenant, prompt_key)
        entry = CachedAnswer.of(question, answer, set_key)
        doc_ids = entry.doc_ids
        attributes = msgspec.json.encode({"sig": question_signature(question)}).decode()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._entry_key(entry_id), _encode(entry), ex=self.ttl_s)
            for doc_id in doc_ids:
                pipe.sadd(self._doc_key(tenant, doc_id), entry_id)
                pipe.expire(self._doc_key(tenant, doc_id), self.ttl_s)
            await pipe.execute()
        await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "VADD", set_key, "VALUES", *self._values(vector), entry_id, "SETATTR", attributes
        )
        return entry_id

    async def invalidate_documents(self, tenant: str, doc_ids: Sequence[str]) -> int:
        """Drop every entry that cited any of ``doc_ids``; returns how many were dropped."""
        dropped = 0
        for doc_id in doc_ids:
            doc_key = self._doc_key(tenant, doc_id)
            members = await self.redis.smembers(doc_key)
            for member in members:
                entry_id = member.decode() if isinstance(member, bytes) else str(member)
                payload = await self.redis.getdel(self._entry_key(entry_id))
                if payload is None:
                    continue
                entry = _decode(_as_bytes(payload))
                await self.redis.execute_command("VREM", entry.vector_set, entry_id)  # type: ignore[no-untyped-call]
                dropped += 1
            await self.redis.delete(doc_key)
        return dropped
