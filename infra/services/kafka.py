"""Apache Kafka 4.x, KRaft single node (combined broker + controller), from its Maven Central jars."""

from __future__ import annotations

import base64
import re
import shutil
import socket
import struct
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from infra.services._process import Launch, Service, ServiceError

_KAFKA_DIR = Path(__file__).resolve().parent.parent / "kafka"


def java_major_version() -> int:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("kafka: Java is not installed; Kafka 4 needs Java 17+ (apt-get install openjdk-17-jre)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise ServiceError(f"kafka: cannot read the Java version from: {out.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def api_versions_probe(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Ask the broker for its API versions: proves a Kafka broker (not just an open port) is answering."""
    client_id = b"ragstream-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(4)
            if len(header) < 4:
                return "broker closed the connection"
            size = struct.unpack(">i", header)[0]
            payload = b""
            while len(payload) < size:
                chunk = sock.recv(size - len(payload))
                if not chunk:
                    break
                payload += chunk
    except OSError as exc:
        return f"no Kafka answer on {host}:{port} ({exc.strerror or exc})"
    if len(payload) < 6:
        return "short ApiVersions response"
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    if correlation_id != 7 or error_code != 0:
        return f"ApiVersions error code {error_code}"
    return None


class Kafka(Service):
    name = "kafka"

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_port}"

    def ports(self) -> Sequence[int]:
        return (self.settings.kafka_port, self.settings.kafka_controller_port)

    @property
    def home(self) -> Path:
        return self.settings.data_path / "kafka"

    @property
    def libs(self) -> Path:
        return self.settings.cache_path / f"kafka-{self.settings.kafka_version}" / "libs"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    def fetch_jars(self) -> None:
        """Resolve the broker jars from Maven Central once per Kafka version (cached outside the data dir)."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError("kafka: Maven is not installed; it fetches Kafka's jars (apt-get install maven)")
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy(_KAFKA_DIR / "pom.xml", work / "pom.xml")
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.settings.kafka_version}",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: fetching jars with Maven failed:\n{result.stdout[-3000:]}{result.stderr}")
        marker.write_text(self.settings.kafka_version)

    def write_config(self) -> None:
        s = self.settings
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(s.topic_partitions),
            # Topics are declared in schemas/topics.py and created by `ragstream up`; a typo must not create one.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A single local broker: no reason to delay the first group join.
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            *self.settings.kafka_heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_KAFKA_DIR / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def format_storage(self) -> None:
        """Format the KRaft metadata log once; the cluster id is kept so restarts reuse the same storage."""
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        cluster_id = cluster_id_file.read_text().strip()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                # One argument: a URL-safe id may start with "-" and would otherwise be read as an option.
                f"--cluster-id={cluster_id}",
                f"--config={self.config_file}",
                "--standalone",
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")

    def prepare(self) -> None:
        if java_major_version() < 17:
            raise ServiceError("kafka: Kafka 4 needs Java 17 or newer")
        self.fetch_jars()
        self.write_config()
        self.format_storage()

    def launch(self) -> Launch:
        return Launch(self._java("kafka.Kafka", str(self.config_file)), cwd=self.home)

    def probe(self) -> str | None:
        return api_versions_probe(self.settings.host, self.settings.kafka_port)
