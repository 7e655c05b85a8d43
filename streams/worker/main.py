"""The worker process: one Faust app with every agent, run until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import faust

from infra.settings import Settings
from streams import telemetry
from streams.worker.agents import register
from streams.worker.app import create_app


def run_worker(settings: Settings, *, generation_concurrency: int = 32) -> None:
    telemetry.configure(settings, "ragstream-worker")
    app = create_app(settings)
    register(app, settings, generation_concurrency=generation_concurrency)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker.execute_from_commandline()
