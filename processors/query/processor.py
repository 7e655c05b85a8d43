"""The query path as plain async code: ``prepare`` (guard, cache, retrieve, rerank, context, prompt, route) and
``answer`` (stream the model through the output guard). No Kafka here: the agents call these two methods at their
two hops, and the in-process baseline benchmark calls them back to back. Every collaborator is a protocol
(:mod:`processors.protocols`, :class:`processors.generation.Generator`), so the processor runs against the real
services in the worker and against :mod:`processors.adapters.memory` in its unit tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from processors.citations import REFUSAL, attributed_citations, citations_for
from processors.claims.verdicts import ClaimChecker, check_sentences
from processors.generation import FallbackGenerator, GenerationParams, Generator, StreamStats
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.stream_guard import StreamingOutputGuard, split_sentences
from processors.prompts.registry import PromptError
from processors.protocols import (
    AnswerCache,
    Embedder,
    Guard,
    ModelChooser,
    PassageScreen,
    PromptProvider,
    Reranker,
    Search,
    SearchMode,
)
from processors.query.context import Context, build_context
from processors.query.deltas import DeltaBatcher
from processors.query.extractive import ExtractiveConfig, best_support, extractive_answer
from processors.query.requests import RequestLimits, request_problem
from processors.telemetry import cache_lookups, count_verdict, reason_kinds, step
from schemas.events import (
    AdapterRef,
    AnswerDone,
    AnswerError,
    Passage,
    PromptedQuery,
    QueryRequest,
    RankedPassage,
    TokenDelta,
    Usage,
)


class QueryConfig(msgspec.Struct, frozen=True, kw_only=True):
    retrieve_k: int = 20
    rerank_k: int = 5
    search_mode: SearchMode = "hybrid"
    # Rerank the retrieved candidates (off: the search's own order is the ranking, and min_relevance is unused).
    rerank: bool = True
    # Below this reranker score no passage is relevant and the answer is the refusal, without a model call.
    min_relevance: float = 0.7
    context_tokens: int = 1500
    max_tokens: int = 256
    cache: bool = True
    delta_max_delay_s: float = 0.05
    delta_max_chars: int = 256
    # Tried in order when the routed model fails before its first token.
    fallback_models: tuple[str, ...] = ()
    limits: RequestLimits = msgspec.field(default_factory=RequestLimits)
    # "generate" (a model writes the answer), "gated" (the same, when a source sentence answers the question) or
    # "extractive" (the best source sentences, quoted): processors/query/requests.py; options.strategy overrides it.
    strategy: str = "generate"
    # How the extractive strategy picks its sentences, and below which score it refuses.
    extractive: ExtractiveConfig = msgspec.field(default_factory=ExtractiveConfig)


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


def ranking(
    ranked: Sequence[Passage], context: Sequence[Passage], withheld: Mapping[str, str] | None = None
) -> list[RankedPassage]:
    """The pipeline's ranking as it travels on the answer; the texts only of the passages the prompt held, and why
    any passage that ranked high enough was kept out (``withheld``, by chunk id)."""
    used = {p.chunk_id for p in context}
    withheld = withheld or {}
    return [
        RankedPassage(
            chunk_id=p.chunk_id,
            doc_id=p.doc_id,
            score=round(p.score, 5),
            in_context=p.chunk_id in used,
            char_start=p.char_start,
            char_end=p.char_end,
            source_uri=p.source_uri,
            text=p.text if p.chunk_id in used else "",
            withheld=withheld.get(p.chunk_id, ""),
        )
        for p in ranked
    ]


def lora_name(tenant: str, adapter: AdapterRef) -> str:
    """How a model server finds a tenant's adapter: ``<tenant>/<sha256[:16]>`` under its adapter folder (where
    ``ragstream finetune`` copies it)."""
    return f"{tenant}/{adapter.content_hash[:16]}"


EXTRACTIVE = "extractive"  # the answer's "model" when it was quoted from the sources
NO_MODEL = ""  # the answer's "model" when the pipeline refused without one


async def _pieces_of(text: str, stats: StreamStats) -> AsyncGenerator[str, None]:
    """A finished text as a stream of word pieces, so it takes the same path through the output guard."""
    stats.first_token_at = time.monotonic()
    for piece in re.findall(r"\S+\s*|\s+", text):
        stats.chunks += 1
        yield piece
    stats.finished_at = time.monotonic()


class _Answered(Exception):
    """Raised inside :meth:`QueryProcessor.prepare` when the request's answer is complete before the model."""

    def __init__(self, *events: TokenDelta | AnswerDone | AnswerError) -> None:
        super().__init__()
        self.events = list(events)


def _timeout(request: QueryRequest, stage: str, message: str) -> AnswerError:
    """The ``timeout`` answer to a request whose deadline passed before or during ``stage``: the client may retry."""
    return AnswerError(request_id=request.request_id, code="timeout", message=message, stage=stage, retryable=True)


def _bad_request(request: QueryRequest, problem: str) -> AnswerError:
    return AnswerError(request_id=request.request_id, code="bad_request", message=problem, stage="prepare")


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
        clock: Callable[[], float] = time.time,
        checker: ClaimChecker | None = None,
        screen: PassageScreen | None = None,
        adapter_for: Callable[[str], AdapterRef | None] | None = None,
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
        self.clock = clock
        self.checker = checker
        self.screen = screen
        # The tenant's active LoRA adapter (the adapter registry), applied when the routed model is its base.
        self.adapter_for = adapter_for

    def expired(self, request: QueryRequest, stage: str) -> AnswerError | None:
        """The timeout answer when the request's deadline has passed: nobody waits for it any more, so expired work
        (a backlog after a worker restart, a queue behind a slow model) is dropped before it costs anything."""
        if request.deadline is None or self.clock() <= request.deadline:
            return None
        late = self.clock() - request.deadline
        return _timeout(request, stage, f"the request's deadline passed {late:.1f}s before {stage}")

    def time_left(self, request: QueryRequest) -> float | None:
        """Seconds until the request's deadline (0 once it passed); None when it has none."""
        return None if request.deadline is None else max(0.0, request.deadline - self.clock())

    async def prepare(self, request: QueryRequest) -> Prepared:
        """Everything before the model: a prompt to generate from, or the whole answer when it ends here. Work still
        running when the deadline passes is abandoned and the client told ``timeout`` then, not when it ends."""
        within = asyncio.timeout(self.time_left(request))
        try:
            async with within:
                return await self._prepare(request)
        except _Answered as answered:
            return Prepared(final=answered.events)
        except TimeoutError:
            if not within.expired():
                raise
            return Prepared(final=[_timeout(request, "prepare", "the request's deadline passed during prepare")])

    def _admit(self, request: QueryRequest, stage: str) -> None:
        """End the request here when its deadline passed or it asks for what cannot be served."""
        expired = self.expired(request, stage)
        if expired is not None:
            raise _Answered(expired)
        problem = request_problem(request, self.config.limits) if stage == "prepare" else None
        if problem is not None:
            raise _Answered(_bad_request(request, problem))

    async def _prepare(self, request: QueryRequest) -> Prepared:
        timings: dict[str, float] = {}
        policy = self.policy_for(request.tenant)
        self._admit(request, "prepare")

        with step("input_guard", timings) as span:
            screened = await self.guard.check(request.question, policy)
            span.set_attributes({"ragstream.guard.action": screened.verdict.action,
                                 "ragstream.guard.kinds": sorted(reason_kinds(screened.verdict.reasons))})  # fmt: skip
        count_verdict("input", screened.verdict)
        if screened.blocked:
            error = AnswerError(
                request_id=request.request_id,
                code="blocked",
                message="The question was blocked by the input guard: " + ", ".join(screened.verdict.reasons),
                stage="input_guard",
            )
            raise _Answered(error)
        question = screened.text

        with step("embed", timings):
            vector = (await self.embedder.embed([question]))[0]

        # The prompt version is part of the cache key: a new template must not serve answers of the old one.
        context_probe = Context(text="", sources=[], tokens=0)
        try:
            _, prompt_ref = self.prompts.render_rag(question, context_probe, request.options.prompt_version)
        except PromptError as exc:  # e.g. a prompt_version the registry does not have
            raise _Answered(_bad_request(request, str(exc))) from None
        prompt_key = f"{prompt_ref.name}:{prompt_ref.version}"
        # So is the tenant's adapter: answers of a promoted (or rolled back) adapter are not served for another.
        adapter = self.adapter_for(request.tenant) if self.adapter_for is not None else None
        if adapter is not None:
            prompt_key += f":lora:{adapter.version}"
        if self.cache is not None and self.config.cache and request.options.use_cache:
            with step("cache_lookup", timings) as span:
                hit = await self.cache.lookup(request.tenant, prompt_key, question, vector)
                span.set_attribute("ragstream.cache.hit", hit is not None)
            cache_lookups.add(1, {"result": "miss" if hit is None else "hit"})
            if hit is not None:
                cached = hit.answer
                raise _Answered(
                    *_whole_answer(
                        AnswerDone(
                            request_id=request.request_id,
                            text=cached.text,
                            citations=cached.citations,
                            model=cached.model,
                            prompt_ref=cached.prompt_ref,
                            adapter=cached.adapter,
                            cached=True,
                            timings_ms=timings,
                            input_verdict=screened.verdict,
                        )
                    )
                )

        self._admit(request, "retrieve")
        with step("retrieve", timings) as span:
            candidates = await self.search.search(
                request.tenant, question, vector.tolist(), self.config.retrieve_k, self.config.search_mode
            )
            span.set_attributes({"ragstream.retrieve.mode": self.config.search_mode,
                                 "ragstream.retrieve.candidates": len(candidates)})  # fmt: skip
        rerank = self.config.rerank if request.options.rerank is None else request.options.rerank
        if rerank:
            with step("rerank", timings) as span:
                # Every candidate is ranked (the reranker scores them all anyway), so the answer can carry the whole
                # ranking.
                ranked = await self.reranker.rerank(question, candidates, len(candidates)) if candidates else []
                top = max((p.score for p in ranked), default=0.0)
                span.set_attributes({"ragstream.rerank.passages": len(ranked), "ragstream.rerank.top_score": top})
            relevant = [p for p in ranked[: self.config.rerank_k] if p.score >= self.config.min_relevance]
        else:  # the search's own order; its scores (RRF, BM25) are on no common scale, so no min_relevance
            ranked = list(candidates)
            relevant = ranked[: self.config.rerank_k]
        withheld: dict[str, str] = {}
        if self.screen is not None and relevant:
            with step("screen_passages", timings) as span:
                reasons = await self.screen.screen([p.text for p in relevant], policy)
                withheld = {p.chunk_id: why for p, why in zip(relevant, reasons, strict=True) if why}
                relevant = [p for p in relevant if p.chunk_id not in withheld]
                span.set_attribute("ragstream.screen.withheld", len(withheld))
        if not relevant:
            raise _Answered(
                *_whole_answer(
                    AnswerDone(
                        request_id=request.request_id,
                        text=REFUSAL,
                        finish_reason="refused",
                        timings_ms=timings,
                        input_verdict=screened.verdict,
                        retrieval=ranking(ranked, [], withheld),
                    )
                )
            )

        started = time.perf_counter()  # "prompt" in timings_ms: context, prompt and route together
        with step("context") as span:
            context = build_context(relevant, max_tokens=self.config.context_tokens, max_sources=self.config.rerank_k)
            span.set_attributes({"ragstream.context.sources": len(context.sources),
                                 "ragstream.context.tokens": context.tokens})  # fmt: skip
        with step("prompt") as span:
            prompt, prompt_ref = self.prompts.render_rag(question, context, request.options.prompt_version)
            span.set_attributes({"ragstream.prompt.name": prompt_ref.name,
                                 "ragstream.prompt.version": prompt_ref.version})  # fmt: skip
        with step("route") as span:
            model = self.chooser.choose(question, context.sources, request.tenant, request.options.model)
            span.set_attribute("gen_ai.request.model", model)
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
                ranked=ranking(ranked, context.sources, withheld),
                adapter=adapter if adapter is not None and adapter.base_model == model else None,
            )
        )

    async def _answerable(self, prompted: PromptedQuery) -> bool:
        """Whether any source sentence answers the question well enough to let a model write the answer."""
        with step("answer_gate") as span:
            support = await best_support(
                prompted.question, prompted.embedding, prompted.passages, self.embedder, self.config.extractive
            )
            span.set_attribute("ragstream.answer_gate.support", support)
        return support >= self.config.extractive.min_score

    async def answer(
        self, prompted: PromptedQuery, *, is_cancelled: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[TokenDelta | AnswerDone | AnswerError]:
        """Stream the model's answer through the output guard; the last event is the :class:`AnswerDone` (or an
        :class:`AnswerError` ``timeout`` without any generation when the deadline passed before it began)."""
        request = prompted.request
        expired = self.expired(request, "generate")
        if expired is not None:
            yield expired
            return
        policy = self.policy_for(request.tenant)
        guard = StreamingOutputGuard(policy, prompted.passages)
        batcher = DeltaBatcher(max_delay_s=self.config.delta_max_delay_s, max_chars=self.config.delta_max_chars)
        params = GenerationParams(
            max_tokens=request.options.max_tokens or self.config.max_tokens,
            temperature=request.options.temperature,
            top_p=request.options.top_p,
            lora_name=lora_name(request.tenant, prompted.adapter) if prompted.adapter else "",
            lora_model=prompted.adapter.base_model if prompted.adapter else "",
        )
        stats = StreamStats(model=prompted.model, started=time.monotonic())
        seq = 0
        guard_busy_s = 0.0  # the streaming output guard's own time, between the model's pieces
        finish: Literal["stop", "length", "cancelled", "refused", "blocked"] = "stop"
        # The rendered template is the user turn; each model gets it in its own chat format, and a failure before
        # the first token falls back to the next model.
        models = [prompted.model, *(m for m in self.config.fallback_models if m != prompted.model)]
        if request.options.model:
            models = [prompted.model]  # the client asked for this model: no silent substitution
        strategy = request.options.strategy or self.config.strategy
        declined = False  # the pipeline itself answers with the refusal (nothing in the sources answers)
        if strategy == "extractive":
            models = [EXTRACTIVE]
            quoted = await extractive_answer(
                prompted.question, prompted.embedding, prompted.passages, self.embedder, self.config.extractive
            )
            declined = quoted == REFUSAL
            pieces = _pieces_of(quoted, stats)
        elif strategy == "gated" and not await self._answerable(prompted):
            models, declined = [NO_MODEL], True
            pieces = _pieces_of(REFUSAL, stats)
        else:
            generator = FallbackGenerator(self.generator, models)
            pieces = generator.generate(prompted.prompt, params, request_id=request.request_id, stats=stats)
        # The deadline bounds each wait for the model's next piece (never a yield: the client's own awaits must not
        # be cancelled); a stream still running when it passes is cut like a cancel and ends in ``timeout``.
        left = self.time_left(request)
        ends_at = None if left is None else asyncio.get_running_loop().time() + left
        timed_out = False
        try:
            while True:
                within = asyncio.timeout_at(ends_at)
                try:
                    async with within:
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if not within.expired():
                        raise
                    timed_out = True
                    break
                pushed = time.perf_counter()
                safe = guard.push(piece)  # may hold back the start of what could become a PII entity
                guard_busy_s += time.perf_counter() - pushed
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
        if timed_out:
            finish = "cancelled"  # held-back text is redacted as on any cut stream
        elif finish == "stop" and stats.chunks >= params.max_tokens:
            finish = "length"
        with step("output_guard") as span:  # its final checks; the streaming part's time is an attribute
            # A cut stream (max_tokens, cancel, block) may end inside an entity ("078-05-"): the guard redacts such
            # a held fragment instead of flushing it.
            tail = guard.finish(truncated=finish != "stop")
            report = guard.report()
            span.set_attributes({"ragstream.guard.action": report.verdict.action,
                                 "ragstream.guard.kinds": sorted(reason_kinds(report.verdict.reasons)),
                                 "ragstream.output_guard.streaming_ms": guard_busy_s * 1000.0})  # fmt: skip
        rest = batcher.flush()
        text_rest = (rest[0] if rest else "") + tail
        if text_rest:
            yield TokenDelta(request_id=request.request_id, seq=seq, text=text_rest, tokens=rest[1] if rest else 0)
            seq += 1
        if timed_out:
            passed = f"the request's deadline passed during generate, after {stats.chunks} pieces of the answer"
            yield _timeout(request, "generate", passed)
            return
        if report.refused or (declined and finish == "stop"):
            finish = "refused"
        citations, _invalid = citations_for(report.text, prompted.passages)
        verdict = report.verdict
        if declined:  # say why on the answer: no source sentence answers the question (extractive or gated)
            verdict = msgspec.structs.replace(verdict, reasons=[*verdict.reasons, "not_answered_by_sources"])
        if self.checker is not None and finish in ("stop", "length"):
            # Sentences the sources contradict are never left unflagged: a note the reader sees, and the verdict.
            checks = check_sentences(split_sentences(report.text), [p.text for p in prompted.passages], self.checker)
            contradicted = sorted({c.passage for c in checks if c.label == "contradicted" and c.passage})
            if contradicted:
                which = ", ".join(str(n) for n in contradicted)
                note = f"\n\n(Note: source {which} contradicts part of this answer.)"
                yield TokenDelta(request_id=request.request_id, seq=seq, text=note, tokens=0)
                seq += 1
                report = dataclasses.replace(report, text=report.text + note)
                verdict = msgspec.structs.replace(
                    verdict, reasons=[*verdict.reasons, *(f"contradicted_by_source:{n}" for n in contradicted)]
                )
        if not citations and finish in ("stop", "length"):
            # Small models often answer from the sources without writing [n]. Attribute each grounded sentence to
            # the source that supports it best (the output guard's groundedness check), and say so in the verdict.
            citations = attributed_citations(report.sentences, prompted.passages)
            if citations:
                verdict = msgspec.structs.replace(verdict, reasons=[*verdict.reasons, "citations_attributed"])
        count_verdict("output", verdict)
        timings = dict(prompted.timings_ms)
        if stats.ttft_s is not None:
            timings["ttft_model"] = stats.ttft_s * 1000.0
        if stats.finished_at is not None:
            timings["generate"] = (stats.finished_at - stats.started) * 1000.0
        answered_by = models[models.index(stats.fallback_from) + 1] if stats.fallback_from in models else models[0]
        yield AnswerDone(
            request_id=request.request_id,
            text=report.text,
            citations=citations,
            model=answered_by,
            adapter=prompted.adapter if prompted.adapter and prompted.adapter.base_model == answered_by else None,
            prompt_ref=prompted.prompt_ref,
            finish_reason=finish,
            usage=Usage(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.chunks),
            timings_ms=timings,
            deltas=seq,
            input_verdict=prompted.input_verdict,
            output_verdict=verdict,
            retrieval=prompted.ranked,
        )

    async def remember(self, prompted: PromptedQuery, done: AnswerDone) -> None:
        """Cache a complete, grounded answer (never a refusal, a cut-off, or a blocked one)."""
        if self.cache is None or not self.config.cache or not prompted.request.options.use_cache:
            return
        if done.finish_reason != "stop" or not done.citations or not prompted.embedding or prompted.prompt_ref is None:
            return
        if done.output_verdict and any(r.startswith("contradicted_by_source") for r in done.output_verdict.reasons):
            return  # a flagged answer is not worth serving again
        key = f"{prompted.prompt_ref.name}:{prompted.prompt_ref.version}"
        current = self.adapter_for(prompted.request.tenant) if self.adapter_for is not None else None
        if current is not None:
            key += f":lora:{current.version}"
        await self.cache.store(prompted.request.tenant, key, prompted.question, prompted.embedding, done)
