"""Agents wire processors to topics through :class:`streams.worker.stage.Stage`; one module per path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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


Role = Literal["all", "query", "ingest"]


def app_id(settings: Settings, role: Role) -> str:
    """The consumer group of a role: a split role must not share a group with agents it does not run."""
    return settings.app_id if role == "all" else f"{settings.app_id}-{role}"


def register(app: faust.App, settings: Settings, *, role: Role = "all") -> Pipeline:
    """Attach the agents of ``role`` to ``app``; the returned pipeline exposes its parts to tests and benchmarks."""
    topics = TopicTable(app, settings)
    replies = ReplyAddresses(settings)
    outbox = KafkaOutbox(app, settings, replies=replies)
    resources = Resources(settings)
    stages: dict[str, Stage[Any]] = {}
    if role in ("all", "query"):
        stages.update(query.register(app, settings, topics, outbox, resources, replies=replies))
    if role in ("all", "ingest"):
        stages.update(ingest.register(app, settings, topics, outbox, resources))

    async def close_resources(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()
        await replies.close()

    app.on_before_shutdown.connect(close_resources)

    return Pipeline(app, topics, outbox, resources, stages)
