"""What a query request may ask for: checked at the bridge (a clear ``bad_request`` before anything is queued)
and again by the worker (any Kafka producer can send requests), with the same rules.

Every option a client sets reaches a model server or a log: unbounded values are refused, not trimmed, so a
client learns what it did wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

import msgspec

from schemas.events import QueryRequest

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# generate: a model writes the answer; gated: the same, but only when a source sentence answers the question
# (processors/query/extractive.py scores them), else the refusal without a model call; extractive: source sentences
# quoted, or the refusal.
STRATEGIES = frozenset({"generate", "gated", "extractive"})


class RequestLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_question_chars: int = 20_000
    max_answer_tokens: int = 1024
    max_session_id_chars: int = 256
    # Models any tenant may name; ``tenant_models`` narrows it per tenant (``"*"``: the default for the others).
    models: frozenset[str] = frozenset({"llm_small", "llm_large"})
    tenant_models: Mapping[str, frozenset[str]] = msgspec.field(default_factory=dict)

    def models_for(self, tenant: str) -> frozenset[str]:
        return self.tenant_models.get(tenant, self.tenant_models.get("*", self.models))


def parse_tenant_models(spec: str) -> dict[str, frozenset[str]]:
    """``"acme:llm_small|llm_large;free:llm_small"`` -> per-tenant model sets; a malformed entry fails start-up."""
    out: dict[str, frozenset[str]] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        tenant, sep, models = item.partition(":")
        names = frozenset(m.strip() for m in models.split("|") if m.strip())
        if not sep or not tenant.strip() or not names:
            raise ValueError(f"tenant_models: {item!r} is not tenant:model|model")
        out[tenant.strip()] = names
    return out


def request_problem(request: QueryRequest, limits: RequestLimits) -> str | None:
    """Why ``request`` cannot be served as asked (naming the field), or None when it can."""
    return next((problem for problem in _problems(request, limits) if problem), None)


def _problems(request: QueryRequest, limits: RequestLimits) -> Iterator[str | None]:
    options = request.options
    yield None if _ID.match(request.request_id) else "request_id must be 1-128 characters of letters, digits and _.:-"
    yield None if request.question.strip() else "question is empty"
    if len(request.question) > limits.max_question_chars:
        yield f"question has {len(request.question)} characters; at most {limits.max_question_chars}"
    if len(request.session_id) > limits.max_session_id_chars:
        yield f"session_id has {len(request.session_id)} characters; at most {limits.max_session_id_chars}"
    if options.max_tokens is not None and not 1 <= options.max_tokens <= limits.max_answer_tokens:
        yield f"options.max_tokens must be 1-{limits.max_answer_tokens}"
    if not (math.isfinite(options.temperature) and 0.0 <= options.temperature <= 2.0):
        yield "options.temperature must be 0-2"
    if not (math.isfinite(options.top_p) and 0.0 < options.top_p <= 1.0):
        yield "options.top_p must be in (0, 1]"
    if options.model is not None and options.model not in limits.models_for(request.tenant):
        allowed = sorted(limits.models_for(request.tenant))
        yield f"options.model {options.model[:64]!r} is not offered; choose one of {allowed}"
    if options.strategy is not None and options.strategy not in STRATEGIES:
        yield f"options.strategy must be one of {sorted(STRATEGIES)}"
    if options.prompt_version is not None and not _VERSION.match(options.prompt_version):
        yield "options.prompt_version must be 1-64 characters of letters, digits and _.-"
