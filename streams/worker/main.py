"""The worker process: one Faust app with the agents of its role, run until SIGTERM/SIGINT.

Roles: ``all`` (every agent: the local stack and small deployments), or ``query`` and ``ingest`` run as separate
processes (each its own consumer group), so a bulk re-index cannot hold the query path's CPU or event loop; the
ingest role also lowers its own CPU priority (``Settings.ingest_worker_nice``). Run either ``all`` or the split
pair for one deployment, not both: each would consume the same topics in its own group.
"""

from __future__ import annotations

import logging
import os

import faust

from infra.settings import Settings
from streams import metrics, telemetry
from streams.worker.agents import Pipeline, Role, app_id, register
from streams.worker.app import create_app


def run_worker(settings: Settings, *, role: Role = "all") -> None:
    telemetry.configure(settings, "ragstream-worker" if role == "all" else f"ragstream-worker-{role}")
    if role == "ingest" and settings.ingest_worker_nice:
        os.nice(settings.ingest_worker_nice)
    app = create_app(settings.with_changes(app_id=app_id(settings, role)) if role != "all" else settings)
    pipeline = register(app, settings, role=role)
    observe(pipeline, settings, role)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        worker.execute_from_commandline()
    finally:
        telemetry.shutdown()


def observe(pipeline: Pipeline, settings: Settings, role: Role = "all") -> None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_port`` (ready once the app runs and, unless it only
    ingests, the query path's models are loaded), the consumer-lag sampler, and every bounded series from zero."""
    app, resources = pipeline.app, pipeline.resources

    def ready() -> bool:
        return bool(app.started) and (role == "ingest" or resources.ready)

    telemetry.serve_endpoints(settings.host, settings.metrics_port, ready)
    consumed = sorted({name for agent in app.agents.values() for name in agent.channel.topics})
    metrics.start_counting(consumed)
    lag = metrics.ConsumerLag(app)
    app.task(lag.run)
