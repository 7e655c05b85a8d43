"""The query path as plain async code: ``prepare`` (guard, cache, retrieve, rerank, context, prompt, route) and
``answer`` (stream the model through the output guard). No Kafka here: the agents call these two methods at their
two hops, and the in-process baseline benchmark calls them back to back. Every collaborator is a protocol
(:mod:`processors.protocols`, :class:`processors.generation.Generator`), so the processor runs against the real
services in the worker and against :mod:`processors.adapters.memory` in its unit tests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from processors.citations import REFUSAL, attributed_citations, citations_for
from processors.generation import FallbackGenerator, GenerationParams, Generator, StreamStats
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.stream_guard import StreamingOutputGuard
from processors.protocols import (
    AnswerCache,
    Embedder,
    Guard,
    ModelChooser,
    PromptProvider,
    Reranker,
    Search,
    SearchMode,
)
from processors.query.context import Context, build_context
from processors.query.deltas import DeltaBatcher
from schemas.events import (
    AnswerDone,
    AnswerError,
    PromptedQuery,
    QueryRequest,
    TokenDelta,
    Usage,
)


class QueryConfig(msgspec.Struct, frozen=True, kw_only=True):
    retrieve_k: int = 20
    rerank_k: int = 5
    search_mode: SearchMode = "hybrid"
    # Below this reranker score no passage is relevant and the answer is the refusal, without a model call.
    min_relevance: float = 0.7
    context_tokens: int = 1500
    max_tokens: int = 256
    cache: bool = True
    delta_max_delay_s: float = 0.05
    delta_max_chars: int = 256
    # Tried in order when the routed model fails before its first token.
    fallback_models: tuple[str, ...] = ()


@dataclass
class Prepared:
    """Either a prompt ready for generation, or the final events (cache hit, refusal, block)."""

    prompted: PromptedQuery | None = None
    final: list[TokenDelta | AnswerDone | AnswerError] = field(default_factory=list)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _whole_answer(done: AnswerDone) -> list[TokenDelta | AnswerDone | AnswerError]:
    """A complete answer as one delta plus done, so clients handle every answer the same way."""
    delta = TokenDelta(request_id=done.request_id, seq=0, text=done.text, tokens=0)
    return [delta, msgspec.structs.replace(done, deltas=1)]


class QueryProcessor:
    def __init__(
        self,
        *,
        guard: Guard,
        policy_for: Callable[[str], GuardPolicy],
        embedder: Embedder,
        search: Search,
        reranker: Reranker,
        prompts: PromptProvider,
        chooser: ModelChooser,
        generator: Generator,
        cache: AnswerCache | None,
        config: QueryConfig | None = None,
    ) -> None:
        self.guard = guard
        self.policy_for = policy_for
        self.embedder = embedder
        self.search = search
        self.reranker = reranker
        self.prompts = prompts
        self.chooser = chooser
        self.generator = generator
        self.cache = cache
        self.config = config or QueryConfig()

    async def prepare(self, request: QueryRequest) -> Prepared:
        timings: dict[str, float] = {}
        policy = self.policy_for(request.tenant)

        started = time.perf_counter()
        screened = await self.guard.check(request.question, policy)
        timings["input_guard"] = _ms(started)
        if screened.blocked:
            error = AnswerError(
                request_id=request.request_id,
                code="blocked",
                message="The question was blocked by the input guard: " + ", ".join(screened.verdict.reasons),
                stage="input_guard",
            )
            return Prepared(final=[error])
        question = screened.text

        started = time.perf_counter()
        vector = (await self.embedder.embed([question]))[0]
        timings["embed"] = _ms(started)

        # The prompt version is part of the cache key: a new template must not serve answers of the old one.
        context_probe = Context(text="", sources=[], tokens=0)
        _, prompt_ref = self.prompts.render_rag(question, context_probe, request.options.prompt_version)
        prompt_key = f"{prompt_ref.name}:{prompt_ref.version}"
        if self.cache is not None and self.config.cache and request.options.use_cache:
            started = time.perf_counter()
            hit = await self.cache.lookup(request.tenant, prompt_key, question, vector)
            timings["cache_lookup"] = _ms(started)
            if hit is not None:
                cached = hit.answer
                return Prepared(
                    final=_whole_answer(
                        AnswerDone(
                            request_id=request.request_id,
                            text=cached.text,
                            citations=cached.citations,
                            model=cached.model,
                            prompt_ref=cached.prompt_ref,
                            cached=True,
                            timings_ms=timings,
                            input_verdict=screened.verdict,
                        )
                    )
                )

        started = time.perf_counter()
        candidates = await self.search.search(
            request.tenant, question, vector.tolist(), self.config.retrieve_k, self.config.search_mode
        )
        timings["retrieve"] = _ms(started)
        started = time.perf_counter()
        passages = await self.reranker.rerank(question, candidates, self.config.rerank_k) if candidates else []
        timings["rerank"] = _ms(started)
        relevant = [p for p in passages if p.score >= self.config.min_relevance]
        if not relevant:
            return Prepared(
                final=_whole_answer(
                    AnswerDone(
                        request_id=request.request_id,
                        text=REFUSAL,
                        finish_reason="refused",
                        timings_ms=timings,
                        input_verdict=screened.verdict,
                    )
                )
            )

        started = time.perf_counter()
        context = build_context(relevant, max_tokens=self.config.context_tokens, max_sources=self.config.rerank_k)
        prompt, prompt_ref = self.prompts.render_rag(question, context, request.options.prompt_version)
        model = self.chooser.choose(question, context.sources, request.tenant, request.options.model)
        timings["prompt"] = _ms(started)
        return Prepared(
            prompted=PromptedQuery(
                request=request,
                question=question,
                prompt=prompt,
                prompt_ref=prompt_ref,
                model=model,
                passages=context.sources,
                timings_ms=timings,
                embedding=[float(x) for x in np.asarray(vector).reshape(-1)],
                input_verdict=screened.verdict,
            )
        )

    async def answer(
        self, prompted: PromptedQuery, *, is_cancelled: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[TokenDelta | AnswerDone]:
        """Stream the model's answer through the output guard; the last event is the :class:`AnswerDone`."""
        request = prompted.request
        policy = self.policy_for(request.tenant)
        guard = StreamingOutputGuard(policy, prompted.passages)
        batcher = DeltaBatcher(max_delay_s=self.config.delta_max_delay_s, max_chars=self.config.delta_max_chars)
        params = GenerationParams(
            max_tokens=request.options.max_tokens or self.config.max_tokens,
            temperature=request.options.temperature,
            top_p=request.options.top_p,
        )
        stats = StreamStats(model=prompted.model, started=time.monotonic())
        seq = 0
        finish: Literal["stop", "length", "cancelled", "refused", "blocked"] = "stop"
        # The rendered template is the user turn; each model gets it in its own chat format, and a failure before
        # the first token falls back to the next model.
        models = [prompted.model, *(m for m in self.config.fallback_models if m != prompted.model)]
        if request.options.model:
            models = [prompted.model]  # the client asked for this model: no silent substitution
        generator = FallbackGenerator(self.generator, models)
        pieces = generator.generate(prompted.prompt, params, request_id=request.request_id, stats=stats)
        try:
            async for piece in pieces:
                safe = guard.push(piece)  # may hold back the start of what could become a PII entity
                ready = batcher.add(safe) if safe else None
                if ready is not None:
                    yield TokenDelta(request_id=request.request_id, seq=seq, text=ready[0], tokens=ready[1])
                    seq += 1
                if guard.blocked:
                    finish = "blocked"
                    break
                if is_cancelled():
                    finish = "cancelled"
                    break
        finally:
            await pieces.aclose()
        if finish == "stop" and stats.chunks >= params.max_tokens:
            finish = "length"
        # A cut stream (max_tokens, cancel, block) may end inside an entity ("078-05-"): the guard redacts such a
        # held fragment instead of flushing it.
        tail = guard.finish(truncated=finish != "stop")
        rest = batcher.flush()
        text_rest = (rest[0] if rest else "") + tail
        if text_rest:
            yield TokenDelta(request_id=request.request_id, seq=seq, text=text_rest, tokens=rest[1] if rest else 0)
            seq += 1
        report = guard.report()
        if report.refused:
            finish = "refused"
        citations, _invalid = citations_for(report.text, prompted.passages)
        verdict = report.verdict
        if not citations and finish in ("stop", "length"):
            # Small models often answer from the sources without writing [n]. Attribute each grounded sentence to
            # the source that supports it best (the output guard's groundedness check), and say so in the verdict.
            citations = attributed_citations(report.sentences, prompted.passages)
            if citations:
                verdict = msgspec.structs.replace(verdict, reasons=[*verdict.reasons, "citations_attributed"])
        timings = dict(prompted.timings_ms)
        if stats.ttft_s is not None:
            timings["ttft_model"] = stats.ttft_s * 1000.0
        if stats.finished_at is not None:
            timings["generate"] = (stats.finished_at - stats.started) * 1000.0
        yield AnswerDone(
            request_id=request.request_id,
            text=report.text,
            citations=citations,
            model=models[models.index(stats.fallback_from) + 1] if stats.fallback_from in models else prompted.model,
            prompt_ref=prompted.prompt_ref,
            finish_reason=finish,
            usage=Usage(completion_tokens=stats.chunks),
            timings_ms=timings,
            deltas=seq,
            input_verdict=prompted.input_verdict,
            output_verdict=verdict,
        )

    async def remember(self, prompted: PromptedQuery, done: AnswerDone) -> None:
        """Cache a complete, grounded answer (never a refusal, a cut-off, or a blocked one)."""
        if self.cache is None or not self.config.cache or not prompted.request.options.use_cache:
            return
        if done.finish_reason != "stop" or not done.citations or not prompted.embedding or prompted.prompt_ref is None:
            return
        key = f"{prompted.prompt_ref.name}:{prompted.prompt_ref.version}"
        await self.cache.store(prompted.request.tenant, key, prompted.question, prompted.embedding, done)
