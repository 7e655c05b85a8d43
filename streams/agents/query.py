"""Query-path agents: generation and cancellation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import faust

from infra.settings import Settings
from processors.generation import Generator
from processors.triton_client import GenerationParams
from schemas.events import CancelRequest, QueryRequest
from streams.agents._resources import Resources
from streams.app import Topics
from streams.stage import Outbox, Stage, StageContext


@dataclass
class Cancellations:
    """Request ids a client gave up on, as seen by this worker; generation checks it between pieces."""

    ttl_s: float = 600.0
    _until: dict[str, float] = field(default_factory=dict)

    def add(self, request_id: str) -> None:
        now = asyncio.get_running_loop().time()
        self._until[request_id] = now + self.ttl_s
        if len(self._until) > 10_000:
            self._until = {key: t for key, t in self._until.items() if t > now}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._until


def register(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    outbox: Outbox,
    resources: Resources,
    *,
    generation_concurrency: int = 32,
) -> dict[str, Stage[object]]:
    cancellations = Cancellations()

    async def generate(request: QueryRequest, ctx: StageContext) -> None:
        generator = Generator(resources.triton)
        params = GenerationParams(
            max_tokens=request.options.max_tokens or settings.llm_max_tokens,
            temperature=request.options.temperature,
            top_p=request.options.top_p,
        )
        model = request.options.model or settings.llm_model
        async for event in generator.answer(
            request_id=request.request_id,
            model=model,
            prompt=request.question,
            params=params,
            is_cancelled=lambda: request.request_id in cancellations,
        ):
            await ctx.outbox.reply(request.reply_to, request.request_id, event)

    async def cancel(request: CancelRequest, ctx: StageContext) -> None:
        cancellations.add(request.request_id)

    stages: dict[str, Stage[object]] = {
        "generate": Stage("generate", QueryRequest, generate, outbox),  # type: ignore[arg-type]
        "cancel": Stage("cancel", CancelRequest, cancel, outbox),  # type: ignore[arg-type]
    }
    app.agent(topics["queries"], name="generate", concurrency=generation_concurrency)(stages["generate"].run)
    app.agent(topics["cancellations"], name="cancel")(stages["cancel"].run)
    return stages
