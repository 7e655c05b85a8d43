"""The local stack as one unit: ``ragstream up`` / ``down`` / ``status``.

Services start together (each process is spawned, then all are awaited against one deadline), topics are created
once Kafka answers, and ``down`` stops them in reverse order by the PIDs recorded at start.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from infra.kafka_admin import ensure_topics
from infra.kafka_security import apply_acls, secured
from infra.services._process import Service, ServiceError, Status
from infra.services.bridge import bridge_instances
from infra.services.kafka import kafka_nodes
from infra.services.milvus import Milvus
from infra.services.prometheus import Prometheus
from infra.services.redis import Redis
from infra.services.supervisor import SupervisorService
from infra.services.triton import Triton
from infra.services.worker import worker_instances
from infra.settings import Settings

__all__ = ["ServiceError", "Stack", "Status", "free_ports", "private_settings"]


INFRASTRUCTURE = ("kafka", "redis", "milvus", "triton")
# Services that may run as several numbered processes here (kafka_brokers, local_workers, local_bridges).
INSTANCED = ("kafka", "worker", "bridge")
# Names that stand for several services. Observability is off by default: `ragstream up observability` starts a
# Prometheus that scrapes the worker, the bridge and Triton (infra/services/prometheus.py).
PARTS: dict[str, tuple[str, ...]] = {"observability": ("prometheus",)}

# Settings a private stack inherits from the caller's environment: where artifacts are cached, and the models.
_PRIVATE_PASSTHROUGH = ("RAGSTREAM_CACHE_DIR", "RAGSTREAM_TRITON_LOAD_MODELS", "RAGSTREAM_TRITON_PYTHON_ENV")


def _assignable_ports() -> range:
    """Ports to choose from for a private stack: below the kernel's ephemeral range. A port the kernel may hand to
    any outgoing connection (or to ``bind(0)``) can be taken between our check and the service's own bind; a Kafka
    node once failed to start because its controller port had become another connection's local port."""
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - 10000 >= 4000:
        return range(10000, low)
    return range(high + 1, 65535)  # an unusual range set low: above it instead


@functools.cache
def _default_ports() -> frozenset[int]:
    """The ports a developer's own stack uses with default settings (and its extra Kafka nodes and instances): a
    private stack keeps off them, so a stack started later on the defaults does not find them taken."""
    defaults = msgspec.structs.asdict(Settings())
    return frozenset(
        value + offset
        for name, value in defaults.items()
        if name.endswith("_port") and isinstance(value, int) and value
        for offset in range(0, 30)
    )


def _take(ports: Sequence[int]) -> bool:
    """Whether every port of ``ports`` can be bound on loopback right now (all held together while checking)."""
    if _default_ports().intersection(ports):
        return False
    held: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago, outside the ephemeral range."""
    pool = _assignable_ports()
    for _ in range(200):
        ports = random.sample(pool, count)
        if _take(ports):
            return ports
    raise RuntimeError(f"no {count} free ports in {pool.start}-{pool.stop - 1}")


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free loopback ports (outside the ephemeral range): a local Kafka cluster's
    node n uses base + 2(n-1) and the port after it, so its ports must be contiguous."""
    pool = _assignable_ports()
    for _ in range(200):
        base = random.randrange(pool.start, pool.stop - size)
        if _take(range(base, base + size)):
            return base
    raise RuntimeError(f"no block of {size} free ports in {pool.start}-{pool.stop - 1}")


def private_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a private stack (tests, benchmarks): its own data dir and free ports, the shared cache."""
    ports = free_ports(12)
    values: dict[str, object] = {
        "data_dir": str(data_dir),
        "kafka_port": ports[0],
        "kafka_controller_port": ports[1],
        "redis_port": ports[2],
        "milvus_port": ports[3],
        "triton_http_port": ports[4],
        "triton_grpc_port": ports[5],
        "worker_web_port": ports[6],
        "bridge_port": ports[7],
        "triton_metrics_port": ports[8],
        "metrics_port": ports[9],
        "bridge_metrics_port": ports[10],
        "prometheus_port": ports[11],
    }
    values.update(overrides)
    return Settings.from_env({k: v for k, v in os.environ.items() if k in _PRIVATE_PASSTHROUGH}, **values)


class Stack:
    """The infrastructure services, plus background workers, bridges and a Prometheus that start only when named
    (``up worker bridge observability``); "worker" names every worker of ``local_workers``, likewise bridges."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: dict[str, Service] = {
            service.name: service
            for service in (
                *kafka_nodes(settings),
                Redis(settings),
                Milvus(settings),
                Triton(settings),
                *worker_instances(settings),
                *bridge_instances(settings),
                Prometheus(settings),
                SupervisorService(settings),  # last: ``down`` stops it first
            )
        }

    def select(self, names: Sequence[str] = (), *, default: Sequence[str] = INFRASTRUCTURE) -> list[Service]:
        # "kafka", "worker" and "bridge" stand for every instance of this host (kafka, kafka-2, kafka-3, ...).
        parts = PARTS | {
            base: tuple(name for name in self.services if name.split("-")[0] == base) for base in INSTANCED
        }
        names = [service for name in names for service in parts.get(name, (name,))]
        unknown = set(names) - set(self.services)
        if unknown:
            known = sorted({*self.services, *parts})
            raise ServiceError(f"unknown service(s) {sorted(unknown)}; known: {known}")
        chosen = names or [service for name in default for service in parts.get(name, (name,))]
        return [service for name, service in self.services.items() if name in chosen]

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
            if secured(self.settings):
                asyncio.run(apply_acls(self.settings))
        return [service.status() for service in chosen]

    def down(self, names: Sequence[str] = ()) -> list[tuple[str, bool]]:
        """Stop the named services, or everything (the supervisor, then the worker first) when none are named.
        Each is marked as stopped on purpose, so a running supervisor does not start it again."""
        stopped = []
        for service in reversed(self.select(names, default=list(self.services))):
            service.run_dir.mkdir(parents=True, exist_ok=True)
            service.down_marker.touch()
            stopped.append((service.name, service.stop()))
        return stopped

    def status(self, names: Sequence[str] = ()) -> list[Status]:
        return [service.status() for service in self.select(names, default=list(self.services))]
