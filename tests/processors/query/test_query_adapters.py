"""The query path applies the tenant's promoted LoRA adapter and every answer records which adapter produced it:
the request to the model names the adapter (only for the model it was trained for), another tenant's request never
does, a rollback changes the identity on the next answer, and the answer cache keeps adapters apart."""

from __future__ import annotations

import msgspec
import pytest

from processors.adapters.memory import (
    HashingEmbedder,
    MemoryAnswerCache,
    MemoryIndex,
    OverlapReranker,
    Script,
    ScriptedGenerator,
)
from processors.adapters.triton import generation_inputs
from processors.finetune.registry import AdapterRegistryState
from processors.generation import GenerationParams
from processors.guardrails.input_guard import InputGuard
from processors.guardrails.policy import GuardPolicy
from processors.prompts.registry import PromptRegistryState
from processors.query.processor import QueryConfig, QueryProcessor, lora_name
from processors.query.prompting import TemplatePrompts
from processors.query.router import FeatureRouter, RoutedChooser, RouterConfig
from schemas.events import AnswerDone, QueryOptions, QueryRequest, ReplyTo
from schemas.finetune import AdapterEvalReport, AdapterMetrics, GateThresholds
from tests.processors.query.test_query_processor import ANSWER, FROB, MANUAL

_M = AdapterMetrics(cases=20, answerable=16, correctness=0.5, citation_rate=0.5, false_refusal_rate=0.0,
                    refusal_recall=1.0)  # fmt: skip
PASSED = AdapterEvalReport(base=_M, adapter=_M, promote=True, reasons=[], thresholds=GateThresholds())


@pytest.fixture(scope="module")
async def guard() -> InputGuard:
    guard = InputGuard()
    await guard.warm_up()
    return guard


async def _processor(
    guard: InputGuard, registry: AdapterRegistryState, cache: MemoryAnswerCache | None = None
) -> tuple[QueryProcessor, ScriptedGenerator]:
    embedder = HashingEmbedder()
    index = MemoryIndex(embedder)
    for tenant in ("acme", "globex"):
        await index.add(tenant, list(MANUAL))
    prompts = PromptRegistryState()
    prompts.install_builtins()
    generator = ScriptedGenerator({"llm_small": Script(ANSWER), "llm_large": Script(ANSWER)})
    processor = QueryProcessor(
        guard=guard, policy_for=lambda tenant: GuardPolicy(), embedder=embedder, search=index,
        reranker=OverlapReranker(), prompts=TemplatePrompts(prompts.resolve),
        chooser=RoutedChooser(FeatureRouter(RouterConfig())), generator=generator, cache=cache,
        config=QueryConfig(), adapter_for=registry.active_ref,
    )  # fmt: skip
    return processor, generator


def _registry() -> AdapterRegistryState:
    registry = AdapterRegistryState()
    for digest in ("a" * 64, "b" * 64):
        record, _ = registry.plan_register("acme", content_hash=digest, base_model="llm_small", path="/x",
                                           report=PASSED)  # fmt: skip
        assert record is not None
        registry.apply(record)
    for version in ("1", "2"):
        promoted = registry.plan_promote("acme", version)
        assert promoted is not None
        registry.apply(promoted)
    return registry


async def _ask(processor: QueryProcessor, tenant: str, request_id: str, model: str = "llm_small") -> AnswerDone:
    request = QueryRequest(request_id=request_id, tenant=tenant, question=FROB, reply_to=ReplyTo(topic="r"),
                           options=QueryOptions(model=model))  # fmt: skip
    prepared = await processor.prepare(request)
    if prepared.prompted is None:  # a cache hit
        done = prepared.final[-1]
        assert isinstance(done, AnswerDone) and done.cached, prepared.final
        return done
    events = [e async for e in processor.answer(prepared.prompted)]
    done = events[-1]
    assert isinstance(done, AnswerDone)
    await processor.remember(prepared.prompted, done)
    return done


async def test_each_answer_records_the_adapter_that_produced_it_and_rollback_changes_it(guard: InputGuard) -> None:
    registry = _registry()
    processor, generator = await _processor(guard, registry)
    v1, v2 = (registry.get("acme", v) for v in ("1", "2"))
    assert v1 is not None and v2 is not None

    done = await _ask(processor, "acme", "r1")
    assert done.adapter == v2.adapter and done.model == "llm_small"
    params = generator.calls[-1][2]
    assert (params.lora_name, params.lora_model) == ("acme/" + "b" * 16, "llm_small")
    assert lora_name("acme", v2.adapter) == params.lora_name

    other = await _ask(processor, "globex", "r2")  # a tenant without adapter: the base model, nothing named
    assert other.adapter is None and generator.calls[-1][2].lora_name == ""

    large = await _ask(processor, "acme", "r3", model="llm_large")  # not the adapter's base model
    assert large.adapter is None and generator.calls[-1][2].lora_name == ""

    registry.apply(registry.plan_rollback("acme"))
    assert (await _ask(processor, "acme", "r4")).adapter == v1.adapter
    assert generator.calls[-1][2].lora_name == "acme/" + "a" * 16
    registry.apply(registry.plan_rollback("acme"))
    assert (await _ask(processor, "acme", "r5")).adapter is None
    assert generator.calls[-1][2].lora_name == ""


async def test_the_answer_cache_does_not_serve_one_adapters_answer_for_another(guard: InputGuard) -> None:
    registry = _registry()
    processor, generator = await _processor(guard, registry, cache=MemoryAnswerCache(threshold=0.8))
    first = await _ask(processor, "acme", "r1")
    assert not first.cached and first.adapter is not None and first.adapter.version == "2"
    again = await _ask(processor, "acme", "r2")
    assert again.cached and again.adapter == first.adapter  # same adapter: the cached answer and its identity
    calls = len(generator.calls)
    registry.apply(registry.plan_rollback("acme"))
    after = await _ask(processor, "acme", "r3")
    assert not after.cached and len(generator.calls) == calls + 1
    assert after.adapter is not None and after.adapter.version == "1"


def test_the_triton_request_names_the_adapter_only_for_its_base_model() -> None:
    params = GenerationParams(lora_name="acme/" + "b" * 16, lora_model="llm_small")
    names = {t.name() for t in generation_inputs("prompt", params, model="llm_small")}
    assert "lora_name" in names
    assert "lora_name" not in {t.name() for t in generation_inputs("prompt", params, model="llm_large")}
    plain = msgspec.structs.replace(params, lora_name="")
    assert "lora_name" not in {t.name() for t in generation_inputs("prompt", plain, model="llm_small")}
