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
from streams import telemetry
from streams.worker.agents import Role, app_id, register
from streams.worker.app import create_app


def run_worker(settings: Settings, *, generation_concurrency: int = 32, role: Role = "all") -> None:
    telemetry.configure(settings, "ragstream-worker" if role == "all" else f"ragstream-worker-{role}")
    if role == "ingest" and settings.ingest_worker_nice:
        os.nice(settings.ingest_worker_nice)
    app = create_app(settings.with_changes(app_id=app_id(settings, role)) if role != "all" else settings)
    register(app, settings, generation_concurrency=generation_concurrency, role=role)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker.execute_from_commandline()
