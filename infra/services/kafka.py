"""Apache Kafka 4.x in KRaft mode from its Maven Central jars: one combined broker + controller node, or a cluster
of ``kafka_brokers`` such nodes on this machine (each a broker and a controller voter)."""

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

from infra.kafka_security import check_credential, parse_users, secured
from infra.services._process import Launch, Service, ServiceError
from infra.settings import Settings

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
    """Node ``node`` (1-based) of the local Kafka; node 1 alone is the single-node broker."""

    def __init__(self, settings: Settings, node: int = 1) -> None:
        super().__init__(settings)
        if not 1 <= node <= settings.kafka_brokers:
            raise ServiceError(f"kafka: node {node} of a {settings.kafka_brokers}-node cluster")
        if settings.kafka_brokers == 2:
            raise ServiceError("kafka: kafka_brokers must be 1, or 3 or more (two controllers cannot lose one)")
        self.node = node
        self.name = node_name(node)
        self.port, self.controller_port = settings.kafka_node_ports(node)

    @property
    def clustered(self) -> bool:
        return self.settings.kafka_brokers > 1

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def ports(self) -> Sequence[int]:
        return (self.port, self.controller_port)

    @property
    def home(self) -> Path:
        return self.settings.data_path / self.name

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

    def security_config(self) -> dict[str, str]:
        """SASL/SCRAM on the client listener, SASL/PLAIN between the broker and its controller, ACLs enforced.

        The admin (``kafka_username``) is the only super user: the broker authenticates as it to itself and to the
        controller; everyone else needs ACLs (:mod:`infra.kafka_security`). Nothing listens unauthenticated.
        """
        s = self.settings
        if s.kafka_security_protocol != "SASL_PLAINTEXT":
            raise ServiceError(
                f"kafka: the local broker runs PLAINTEXT or SASL_PLAINTEXT, not {s.kafka_security_protocol} "
                "(SASL_SSL is for a production cluster: set RAGSTREAM_KAFKA_BOOTSTRAP)"
            )
        admin, password = s.kafka_username, s.kafka_password
        if not admin or not password:
            raise ServiceError("kafka: a secured local broker needs RAGSTREAM_KAFKA_USERNAME and _PASSWORD (its admin)")
        check_credential(admin, password)
        mechanism = s.kafka_sasl_mechanism
        return {
            "listeners": f"SASL_PLAINTEXT://{s.host}:{self.port},CONTROLLER://{s.host}:{self.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{password}";'
            ),
            # SCRAM credentials live in the metadata the controller serves, so the controller listener uses PLAIN
            # with the admin as its only user.
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{admin}" password="{password}" user_{admin}="{password}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def quorum_config(self) -> dict[str, str]:
        """One node: a dynamic quorum of itself (formatted ``--standalone``). A cluster: every node a static voter,
        so the controllers keep a majority (and the brokers their metadata) with any minority of nodes down."""
        s = self.settings
        if not self.clustered:
            return {"controller.quorum.bootstrap.servers": f"{s.host}:{self.controller_port}"}
        voters = ",".join(f"{n}@{s.host}:{s.kafka_node_ports(n)[1]}" for n in range(1, s.kafka_brokers + 1))
        return {"controller.quorum.voters": voters}

    def write_config(self) -> None:
        s = self.settings
        replicas, in_sync = str(s.replication_factor), str(s.min_insync_replicas)
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(self.node),
            **self.quorum_config(),
            "listeners": f"PLAINTEXT://{s.host}:{self.port},CONTROLLER://{s.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            **(self.security_config() if secured(s) else {}),
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(s.topic_partitions),
            # Topics are declared in schemas/topics.py and created by `ragstream up`; a typo must not create one.
            "auto.create.topics.enable": "false",
            # Internal topics (consumer offsets, transactions) as durable as ragstream's own.
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            # A single local broker: no reason to delay the first group join.
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        self.config_file.chmod(0o600)  # holds the admin's password when secured

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

    @property
    def _mode_file(self) -> Path:
        return self.home / "security"

    def format_storage(self) -> None:
        """Format the KRaft metadata log once; the cluster id is kept so restarts reuse the same storage.

        A secured broker gets its SCRAM users (the admin and ``kafka_users``) here, as the first metadata records:
        SCRAM credentials cannot be created over the network before a user exists who may create them.
        """
        mode = self.settings.kafka_security_protocol
        if (self.home / "data" / "meta.properties").exists():
            formatted = self._mode_file.read_text().strip() if self._mode_file.exists() else "PLAINTEXT"
            if formatted != mode:
                raise ServiceError(
                    f"kafka: the storage in {self.home} was formatted for {formatted}, not {mode}; "
                    "use another RAGSTREAM_DATA_DIR (SCRAM users are created when the storage is formatted)"
                )
            return
        # One id for every node of a cluster, kept by node 1.
        cluster_id_file = self.settings.data_path / node_name(1) / "cluster.id"
        cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
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
                *(() if self.clustered else ("--standalone",)),
                "--ignore-formatted",
                *self._scram_arguments(),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")
        self._mode_file.write_text(mode)

    def _scram_arguments(self) -> list[str]:
        s = self.settings
        if not secured(s):
            return []
        users = {s.kafka_username: s.kafka_password, **parse_users(s.kafka_users)}
        mechanism = s.kafka_sasl_mechanism
        return [f"--add-scram={mechanism}=[name={name},password={password}]" for name, password in users.items()]

    def prepare(self) -> None:
        if java_major_version() < 17:
            raise ServiceError("kafka: Kafka 4 needs Java 17 or newer")
        self.fetch_jars()
        self.write_config()
        self.format_storage()

    def launch(self) -> Launch:
        return Launch(self._java("kafka.Kafka", str(self.config_file)), cwd=self.home)

    def probe(self) -> str | None:
        return api_versions_probe(self.settings.host, self.port)


def node_name(node: int) -> str:
    """``kafka`` for node 1 (the single-node broker keeps its name, data dir and PID file), ``kafka-<n>`` after."""
    return "kafka" if node == 1 else f"kafka-{node}"


def kafka_nodes(settings: Settings) -> list[Kafka]:
    return [Kafka(settings, node) for node in range(1, settings.kafka_brokers + 1)]
