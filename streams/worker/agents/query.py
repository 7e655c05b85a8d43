"""Query-path agents. Two Kafka hops, chosen by measurement (see docs/ARCHITECTURE.md):

1. ``prepare`` on ``queries``: guard, cache lookup, embed, retrieve, rerank, context, prompt, route. Short I/O-bound
   steps that run back to back in one agent; a hop between each would add Kafka latency for no independent scaling.
   The result goes to ``query_stages`` (or, for a cache hit, refusal or block, straight to the client).
2. ``generate`` on ``query_stages``: stream the model through the output guard to the client's reply address. It
   holds requests for seconds, so it scales (and is throttled) apart from ``prepare``.

Cancellations are broadcast: every worker tails the whole cancellations topic, because the worker generating a
request is whichever one owns its ``query_stages`` partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer

from infra.kafka_security import client_options
from infra.settings import Settings
from schemas.codec import DecodeError, EventDecoder
from schemas.events import AnswerDone, CacheInvalidation, CancelRequest, PromptedQuery, QueryRequest
from schemas.topics import Topic
from streams.kafka import follow_since
from streams.worker.app import TopicTable
from streams.worker.outbox import Outbox
from streams.worker.replies import ReplyAddresses
from streams.worker.resources import Resources
from streams.worker.stage import Stage, StageContext

log = logging.getLogger(__name__)


@dataclass
class Cancellations:
    """Request ids a client gave up on; generation checks it between pieces. Entries expire after ``ttl_s``."""

    ttl_s: float = 600.0
    _until: dict[str, float] = field(default_factory=dict)

    def add(self, request_id: str) -> None:
        now = asyncio.get_running_loop().time()
        self._until[request_id] = now + self.ttl_s
        if len(self._until) > 10_000:
            self._until = {key: t for key, t in self._until.items() if t > now}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._until


async def tail_cancellations(settings: Settings, cancellations: Cancellations) -> None:
    """Every worker reads every cancellation (no consumer group). It starts one request timeout back, so the
    cancels sent while it was down (or restarting) still stop the requests it picks up again."""
    decoder: EventDecoder[CancelRequest] = EventDecoder(CancelRequest)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **client_options(settings),
    )
    await consumer.start()
    try:
        await follow_since(consumer, settings.topic(Topic.CANCELLATIONS), time.time() - settings.request_timeout_s)
        async for record in consumer:
            try:
                cancellations.add(decoder.decode(record.value or b"").request_id)
            except DecodeError:
                log.warning("ignoring an undecodable cancellation at offset %s", record.offset)
    finally:
        await consumer.stop()


def register(
    app: faust.App,
    settings: Settings,
    topics: TopicTable,
    outbox: Outbox,
    resources: Resources,
    *,
    replies: ReplyAddresses | None = None,
) -> dict[str, Stage[Any]]:
    cancellations = Cancellations()

    async def prepare(request: QueryRequest, ctx: StageContext) -> None:
        if replies is not None:
            await replies.check(request.reply_to)  # before any work: an unanswerable request is a dead letter
        prepared = await (await resources.query()).prepare(request)
        if prepared.prompted is not None:
            await ctx.outbox.emit(Topic.QUERY_STAGES, request.request_id, prepared.prompted)
        for event in prepared.final:
            await ctx.outbox.reply(request.reply_to, request.request_id, event)

    async def generate(prompted: PromptedQuery, ctx: StageContext) -> None:
        request = prompted.request
        processor = await resources.query()
        done: AnswerDone | None = None
        async for event in processor.answer(prompted, is_cancelled=lambda: request.request_id in cancellations):
            await ctx.outbox.reply(request.reply_to, request.request_id, event)
            if isinstance(event, AnswerDone):
                done = event
        if done is not None:
            try:
                await processor.remember(prompted, done)
            except Exception:  # the client has its answer; a cache write failure must not turn it into an error
                log.exception("could not cache the answer to %s", request.request_id)

    async def invalidate(event: CacheInvalidation, ctx: StageContext) -> None:
        cache = (await resources.query()).cache
        if cache is not None:
            await cache.invalidate_documents(event.tenant, event.doc_ids)

    stages: dict[str, Stage[Any]] = {
        "prepare": Stage("prepare", QueryRequest, prepare, outbox),
        "generate": Stage("generate", PromptedQuery, generate, outbox),
        "invalidate": Stage("invalidate", CacheInvalidation, invalidate, outbox),
    }
    app.agent(topics[Topic.QUERIES], name="prepare", concurrency=settings.prepare_concurrency)(stages["prepare"].run)
    generate_agent = app.agent(topics[Topic.QUERY_STAGES], name="generate", concurrency=settings.generate_concurrency)
    generate_agent(stages["generate"].run)
    app.agent(topics[Topic.CACHE_INVALIDATIONS], name="invalidate")(stages["invalidate"].run)

    @app.task  # type: ignore[untyped-decorator]
    async def cancellation_listener() -> None:
        while True:
            try:
                await tail_cancellations(settings, cancellations)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cancellation listener failed; restarting")
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(1.0)

    @app.task  # type: ignore[untyped-decorator]
    async def warm_up() -> None:
        await resources.warm_up()

    return stages
