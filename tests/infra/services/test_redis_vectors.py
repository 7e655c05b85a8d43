"""Redis 8's built-in vector sets, which the semantic cache is built on."""

from __future__ import annotations

import json

import numpy as np
import redis

from infra.settings import Settings
from infra.stack import Stack


def _vec(seed: int, dim: int = 8) -> list[float]:
    v = np.random.default_rng(seed).normal(size=dim)
    return [float(x) for x in v / np.linalg.norm(v)]


def test_vector_set_similarity_with_attribute_filter(stack: Stack, stack_settings: Settings) -> None:
    client = redis.Redis.from_url(stack_settings.redis_address)
    key = "test:vset"
    client.delete(key)
    for i in range(20):
        attrs = json.dumps({"tenant": "a" if i % 2 == 0 else "b"})
        client.execute_command("VADD", key, "VALUES", 8, *_vec(i), f"item{i}", "SETATTR", attrs)
    assert client.execute_command("VCARD", key) == 20

    raw = client.execute_command("VSIM", key, "VALUES", 8, *_vec(4), "WITHSCORES", "COUNT", 3)
    # redis-py 8 parses WITHSCORES into a mapping; older clients return a flat [name, score, ...] list.
    pairs = list(raw.items()) if isinstance(raw, dict) else list(zip(raw[::2], raw[1::2], strict=True))
    best_name, best_score = max(pairs, key=lambda pair: float(pair[1]))
    assert len(pairs) == 3
    assert best_name.decode() == "item4"  # the exact vector is its own nearest neighbour
    assert float(best_score) > 0.999

    filtered = client.execute_command("VSIM", key, "VALUES", 8, *_vec(4), "COUNT", 10, "FILTER", '.tenant == "b"')
    assert filtered, "filter returned nothing"
    assert all(int(name.decode()[4:]) % 2 == 1 for name in filtered)
    client.delete(key)
    client.close()


def test_redis_persists_with_append_only_file(stack: Stack, stack_settings: Settings) -> None:
    client = redis.Redis.from_url(stack_settings.redis_address)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.info("server")["redis_version"].startswith("8.")
    client.close()
