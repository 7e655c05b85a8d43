"""Settings become the processors' configuration here, and nowhere else."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from processors.query.router import FeatureRouter, HeuristicRouter
from schemas.events import Passage
from streams.configure import query_config, router_from_settings

ONE_DOC = [
    Passage(chunk_id=f"{doc}#{i}", doc_id=doc, text=f"text {i}", score=score)
    for i, (doc, score) in enumerate([("a", 0.9), ("a", 0.85), ("b", 0.3), ("c", 0.2)])
]


def test_build_router_follows_the_settings() -> None:
    settings = Settings.from_env({}, llm_small_model="s", llm_large_model="L", router_overrides="vip:large")
    router = router_from_settings(settings)
    assert isinstance(router, FeatureRouter)
    decision = router.route("What is Python?", ONE_DOC, "vip")
    assert (decision.tier, decision.model, decision.router) == ("large", "L", "feature")
    assert router.route("What is Python?", ONE_DOC, "other").model == "s"
    assert isinstance(router_from_settings(settings.with_changes(router="heuristic")), HeuristicRouter)
    with pytest.raises(ValueError, match="router must be one of"):
        router_from_settings(settings.with_changes(router="llm"))
    with pytest.raises(ValueError, match="router_overrides"):
        router_from_settings(settings.with_changes(router_overrides="acme:huge"))


def test_settings_read_router_fields_from_the_environment() -> None:
    settings = Settings.from_env({"RAGSTREAM_ROUTER": "heuristic", "RAGSTREAM_ROUTER_OVERRIDES": "a:large"})
    assert settings.router == "heuristic"
    assert router_from_settings(settings).config.overrides == {"a": "large"}


def test_query_config_carries_the_query_settings() -> None:
    settings = Settings.from_env({}, retrieve_k=7, rerank_k=3, search_mode="bm25", llm_max_tokens=99)
    config = query_config(settings)
    assert (config.retrieve_k, config.rerank_k, config.search_mode, config.max_tokens) == (7, 3, "bm25", 99)
    assert config.fallback_models == (settings.llm_small_model,)
