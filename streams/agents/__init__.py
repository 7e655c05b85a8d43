"""Agents wire processors to topics through :class:`streams.stage.Stage`; one module per path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from infra.settings import Settings
from streams.agents import ingest, query
from streams.agents._resources import Resources
from streams.app import Topics
from streams.stage import Outbox, Stage


@dataclass
class Pipeline:
    app: faust.App
    topics: Topics
    outbox: Outbox
    resources: Resources
    stages: dict[str, Stage[object]]


def register(app: faust.App, settings: Settings, *, generation_concurrency: int = 32) -> Pipeline:
    """Attach every agent to ``app``; the returned pipeline exposes its parts to tests and benchmarks."""
    topics = Topics(app, settings)
    outbox = Outbox(app, settings)
    resources = Resources(settings)
    stages: dict[str, Stage[object]] = {}
    stages.update(
        query.register(app, settings, topics, outbox, resources, generation_concurrency=generation_concurrency)
    )
    stages.update(ingest.register(app, settings, topics, outbox, resources))

    async def close_resources(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await resources.close()

    app.on_before_shutdown.connect(close_resources)

    return Pipeline(app, topics, outbox, resources, stages)
