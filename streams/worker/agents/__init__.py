"""Agents wire processors to topics through :class:`streams.worker.stage.Stage`; one module per path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from infra.settings import Settings
from streams.worker.agents import ingest, query
from streams.worker.app import TopicTable
from streams.worker.outbox import KafkaOutbox
from streams.worker.replies import ReplyAddresses
from streams.worker.resources import Resources
from streams.worker.stage import Stage


@dataclass
class Pipeline:
    app: faust.App
    topics: TopicTable
    outbox: KafkaOutbox
    resources: Resources
    stages: dict[str, Stage[Any]]


def register(app: faust.App, settings: Settings, *, generation_concurrency: int = 32) -> Pipeline:
    """Attach every agent to ``app``; the returned pipeline exposes its parts to tests and benchmarks."""
    topics = TopicTable(app, settings)
    replies = ReplyAddresses(settings)
    outbox = KafkaOutbox(app, settings, replies=replies)
    resources = Resources(settings)
    stages: dict[str, Stage[Any]] = {}
    stages.update(
        query.register(
            app, settings, topics, outbox, resources, replies=replies, generation_concurrency=generation_concurrency
        )
    )
    stages.update(ingest.register(app, settings, topics, outbox, resources))

    async def close_resources(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()
        await replies.close()

    app.on_before_shutdown.connect(close_resources)

    return Pipeline(app, topics, outbox, resources, stages)
