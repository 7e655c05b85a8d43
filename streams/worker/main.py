"""The worker process: one Faust app with every agent, run until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import faust

from infra.settings import Settings
from streams import metrics, telemetry
from streams.worker.agents import Pipeline, register
from streams.worker.app import create_app


def run_worker(settings: Settings, *, generation_concurrency: int = 32) -> None:
    telemetry.configure(settings, "ragstream-worker")
    app = create_app(settings)
    pipeline = register(app, settings, generation_concurrency=generation_concurrency)
    observe(pipeline, settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        worker.execute_from_commandline()
    finally:
        telemetry.shutdown()


def observe(pipeline: Pipeline, settings: Settings) -> None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_port`` (ready once the app runs and the query path's
    models are loaded), the consumer-lag sampler, and every bounded series shown from zero."""
    app, resources = pipeline.app, pipeline.resources

    def ready() -> bool:
        return bool(app.started) and resources.ready

    telemetry.serve_endpoints(settings.host, settings.metrics_port, ready)
    consumed = sorted({name for agent in app.agents.values() for name in agent.channel.topics})
    metrics.start_counting(consumed)
    lag = metrics.ConsumerLag(app)
    app.task(lag.run)
