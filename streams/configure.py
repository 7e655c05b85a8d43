"""Where settings become the processors' plain configuration objects (processors never read settings).

Every process (worker, bridge, benchmarks) builds its configuration here, so one setting means the same thing
everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.settings import Settings
from processors.claims.verdicts import ClaimChecker
from processors.query.requests import STRATEGIES, RequestLimits, parse_tenant_models
from processors.query.router import Router, RouterConfig, build_router, parse_router_overrides

if TYPE_CHECKING:
    from processors.query.processor import QueryConfig

TEST_MODELS = frozenset({"llm_echo"})


def router_from_settings(settings: Settings) -> Router:
    """The router the settings name, with their models and tenant overrides; bad settings fail at start-up."""
    config = RouterConfig(
        small_model=settings.llm_small_model,
        large_model=settings.llm_large_model,
        overrides=parse_router_overrides(settings.router_overrides),
    )
    return build_router(settings.router, config)


def query_config(settings: Settings) -> QueryConfig:
    from processors.query.processor import QueryConfig

    s = settings
    return QueryConfig(
        retrieve_k=s.retrieve_k,
        rerank_k=s.rerank_k,
        search_mode=s.search_mode,
        rerank=s.rerank,
        min_relevance=s.min_relevance,
        context_tokens=s.context_tokens,
        max_tokens=s.llm_max_tokens,
        cache=s.cache_enabled,
        fallback_models=(s.llm_small_model,),
        limits=request_limits(s),
        strategy=query_strategy(s),
    )


def claim_checker(settings: Settings) -> ClaimChecker | None:
    """The checker generated answers are flagged with (None: off); an unknown name fails at start-up."""
    from processors.claims.lexical import LexicalClaimChecker

    checkers: dict[str, type[LexicalClaimChecker] | None] = {"lexical": LexicalClaimChecker, "off": None}
    if settings.claim_checker not in checkers:
        raise ValueError(f"claim_checker must be one of {sorted(checkers)}, not {settings.claim_checker!r}")
    checker = checkers[settings.claim_checker]
    return checker() if checker is not None else None


def query_strategy(settings: Settings) -> str:
    if settings.answer_strategy not in STRATEGIES:
        raise ValueError(f"answer_strategy must be one of {sorted(STRATEGIES)}, not {settings.answer_strategy!r}")
    return settings.answer_strategy


def request_limits(settings: Settings) -> RequestLimits:
    """What clients may ask for. The two tiers and ``offered_models`` are offered to every tenant unless
    ``tenant_models`` narrows it; test models only while ``serve_test_models`` is on."""
    s = settings
    offered = {s.llm_small_model, s.llm_large_model, *(m.strip() for m in s.offered_models.split(",") if m.strip())}
    if s.serve_test_models:
        offered |= TEST_MODELS
    per_tenant = {
        tenant: models if s.serve_test_models else models - TEST_MODELS
        for tenant, models in parse_tenant_models(s.tenant_models).items()
    }
    return RequestLimits(
        max_question_chars=s.max_question_chars,
        max_answer_tokens=s.max_answer_tokens,
        max_session_id_chars=s.max_session_id_chars,
        models=frozenset(offered),
        tenant_models=per_tenant,
    )
