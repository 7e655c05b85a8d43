"""The local stack as one unit: ``ragstream up`` / ``down`` / ``status``.

Services start together (each process is spawned, then all are awaited against one deadline), topics are created
once Kafka answers, and ``down`` stops them in reverse order by the PIDs recorded at start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from infra.kafka_admin import ensure_topics
from infra.services._process import Service, ServiceError, Status
from infra.services.kafka import Kafka
from infra.services.milvus import Milvus
from infra.services.redis import Redis
from infra.services.triton import Triton
from infra.settings import Settings

__all__ = ["ServiceError", "Stack", "Status"]


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: dict[str, Service] = {
            service.name: service
            for service in (Kafka(settings), Redis(settings), Milvus(settings), Triton(settings))
        }

    def select(self, names: Sequence[str] = ()) -> list[Service]:
        unknown = set(names) - set(self.services)
        if unknown:
            raise ServiceError(f"unknown service(s) {sorted(unknown)}; known: {sorted(self.services)}")
        return [service for name, service in self.services.items() if not names or name in names]

    def up(self, names: Sequence[str] = ()) -> list[Status]:
        """Start what is not running, wait until everything is ready, create missing topics. Idempotent."""
        chosen = self.select(names)
        started: list[Service] = []
        try:
            for service in chosen:
                if service.spawn() is not None:
                    started.append(service)
            deadline = time.monotonic() + self.settings.start_timeout_s
            for service in chosen:
                service.wait_ready(deadline)
        except BaseException:
            for service in reversed(started):
                service.stop()
            raise
        if any(service.name == "kafka" for service in chosen):
            asyncio.run(ensure_topics(self.settings))
        return [service.status() for service in chosen]

    def down(self, names: Sequence[str] = ()) -> list[tuple[str, bool]]:
        return [(service.name, service.stop()) for service in reversed(self.select(names))]

    def status(self, names: Sequence[str] = ()) -> list[Status]:
        return [service.status() for service in self.select(names)]
