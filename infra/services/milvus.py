"""Milvus Lite in server mode: one process owns the data dir; workers, the CLI and tests share it over gRPC.

Setting ``RAGSTREAM_MILVUS_URI`` to a real Milvus deployment bypasses this service; the client code is the same.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from infra.services._process import Launch, Service


class Milvus(Service):
    name = "milvus"
    # Milvus Lite drains in-flight requests and closes its database on Ctrl-C; SIGTERM would end it mid-write.
    stop_signal = signal.SIGINT

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.milvus_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.milvus_port,)

    @property
    def home(self) -> Path:
        return self.settings.data_path / "milvus"

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def launch(self) -> Launch:
        code = "import sys; from milvus_lite.cmdline import main; sys.exit(main())"
        return Launch(
            [
                sys.executable, "-c", code, "server",
                "--data-dir", str(self.home),
                "--host", self.settings.host,
                "--port", str(self.settings.milvus_port),
            ]
        )  # fmt: skip

    def probe(self) -> str | None:
        # A gRPC channel that connects proves the server is listening; pymilvus' own connect retries for long.
        channel = grpc.insecure_channel(f"{self.settings.host}:{self.settings.milvus_port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            return f"no Milvus gRPC answer on {self.settings.host}:{self.settings.milvus_port}"
        finally:
            channel.close()
        return None
