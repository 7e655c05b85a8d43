"""The Kafka of infra/deploy/compose.yaml, run for real without Docker: its `kafka-format` script formats the storage
with the SCRAM users, its environment becomes server.properties by the apache/kafka image's rules, the broker starts
from the same jars, `ragstream kafka-setup`'s code creates topics and ACLs, and the healthcheck's own command logs in.
Only host names, ports and paths are changed (and /opt/kafka/bin/*.sh stand-ins run the same Java classes)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from infra.kafka_admin import ensure_topics
from infra.kafka_security import apply_acls, client_options
from infra.services.kafka import Kafka, api_versions_probe
from infra.settings import Settings
from infra.stack import free_ports
from schemas.topics import Topic
from tests.conftest import deploy_validate, isolated_settings

pytestmark = pytest.mark.services

HOST_ENV = {
    "KAFKA_ADMIN_PASSWORD": "adm-Pw1",
    "KAFKA_BRIDGE_PASSWORD": "brg-Pw2",
    "KAFKA_WORKER_PASSWORD": "wrk-Pw3",
    "KAFKA_INGEST_PASSWORD": "ing-Pw4",
    "KAFKA_OPERATOR_PASSWORD": "opr-Pw5",
    "KAFKA_MONITOR_PASSWORD": "mon-Pw6",
}


def interpolate(value: str) -> str:
    """Compose's variable substitution: ``${VAR:?message}`` from the host, ``$$`` for a literal ``$``."""
    value = value.replace("$$", "\0")
    value = re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: HOST_ENV[m.group(1)], value)
    return value.replace("\0", "$")


def env_to_property(name: str) -> str:
    """The apache/kafka image's rule: KAFKA_ dropped, ``___`` -> ``-``, ``__`` -> ``_``, ``_`` -> ``.``."""
    rest = name.removeprefix("KAFKA_").replace("___", "-").replace("__", "\0").replace("_", ".")
    return rest.replace("\0", "_").lower()


class ComposeKafka:
    def __init__(self, tmp: Path) -> None:
        yaml = deploy_validate()._load_yaml_module()
        compose = yaml.safe_load((Path(__file__).parents[2] / "infra" / "deploy" / "compose.yaml").read_text())
        self.services: dict[str, Any] = compose["services"]
        self.tmp = tmp
        self.broker_port, self.controller_port, self.host_port = free_ports(3)
        self.data = tmp / "data"
        node = Kafka(isolated_settings(tmp / "stack"))
        node.fetch_jars()
        self.java = node._java
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for script, main_class in (
            ("kafka-storage.sh", "kafka.tools.StorageTool"),
            ("kafka-broker-api-versions.sh", "org.apache.kafka.tools.BrokerApiVersionsCommand"),
        ):
            path = bin_dir / script
            path.write_text("#!/bin/sh\nexec " + " ".join(f"'{arg}'" for arg in self.java(main_class)) + ' "$@"\n')
            path.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    def local(self, text: str) -> str:
        """compose's names, ports and paths -> this machine's."""
        for old, new in (
            ("/opt/kafka/bin/", f"{self.tmp}/bin/"),
            ("/var/lib/kafka/data", str(self.data)),
            ("kafka:9092", f"127.0.0.1:{self.broker_port}"),
            ("kafka:9093", f"127.0.0.1:{self.controller_port}"),
            ("localhost:29092", f"127.0.0.1:{self.host_port}"),
            ("localhost:9092", f"127.0.0.1:{self.broker_port}"),
            ("://:9092", f"://127.0.0.1:{self.broker_port}"),
            ("://:9093", f"://127.0.0.1:{self.controller_port}"),
            ("://:29092", f"://127.0.0.1:{self.host_port}"),
        ):
            text = text.replace(old, new)
        return text

    def service_env(self, name: str) -> dict[str, str]:
        return {k: self.local(interpolate(str(v))) for k, v in self.services[name]["environment"].items()}

    def format(self) -> None:
        shell, flag, script = self.services["kafka-format"]["command"]
        env = {**os.environ, **self.service_env("kafka-format")}
        result = subprocess.run(
            [shell, flag, self.local(interpolate(script))],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert (self.data / "meta.properties").exists()

    def start(self) -> None:
        env = self.service_env("kafka")
        properties = {env_to_property(k): v for k, v in env.items() if k.startswith("KAFKA_")}
        config = self.tmp / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        log = (self.tmp / "kafka.log").open("wb")
        self.proc = subprocess.Popen(
            self.java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while api_versions_probe("127.0.0.1", self.broker_port) is not None:
            assert self.proc.poll() is None, (self.tmp / "kafka.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (self.tmp / "kafka.log").read_text()[-4000:]
            time.sleep(0.3)

    def healthcheck(self, admin_password: str) -> int:
        kind, script = self.services["kafka"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        env = {**os.environ, **self.service_env("kafka"), "SCRAM_ADMIN_PASSWORD": admin_password}
        return subprocess.run(
            ["sh", "-c", self.local(interpolate(script))], check=False, env=env, timeout=120
        ).returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def compose_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeKafka]:
    kafka = ComposeKafka(tmp_path_factory.mktemp("compose-kafka"))
    try:
        kafka.format()
        kafka.start()
        yield kafka
    finally:
        kafka.stop()  # by its PID (process group)


def app_settings(kafka: ComposeKafka, service: str, port: int | None = None) -> Settings:
    """A ragstream service's settings from its compose environment (here: the in-network listener)."""
    env = {k: v for k, v in kafka.service_env(service).items() if k.startswith("RAGSTREAM_")}
    env["RAGSTREAM_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port or kafka.broker_port}"
    env["RAGSTREAM_DATA_DIR"] = str(kafka.tmp / service)
    return Settings.from_env(env)


async def produce(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers, request_timeout_ms=5000, **client_options(settings)
    )
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 20)
    finally:
        await producer.stop()


def test_the_compose_broker_authenticates_authorizes_and_passes_its_healthcheck(compose_kafka: ComposeKafka) -> None:
    assert compose_kafka.healthcheck(HOST_ENV["KAFKA_ADMIN_PASSWORD"]) == 0
    assert compose_kafka.healthcheck("wrong") != 0

    setup = app_settings(compose_kafka, "kafka-setup")  # what `ragstream kafka-setup` runs with in compose
    assert setup.kafka_username == "admin"
    asyncio.run(ensure_topics(setup))
    asyncio.run(apply_acls(setup))

    bridge, worker = app_settings(compose_kafka, "ragstream-bridge"), app_settings(compose_kafka, "ragstream-worker")
    queries, answers = bridge.topic(Topic.QUERIES), bridge.topic(Topic.ANSWERS)
    asyncio.run(produce(bridge, queries))
    asyncio.run(produce(worker, answers))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(produce(worker, queries))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(produce(bridge, answers))
    for port in (compose_kafka.broker_port, compose_kafka.host_port):
        anonymous = app_settings(compose_kafka, "ragstream-bridge", port).with_changes(
            kafka_security_protocol="PLAINTEXT"
        )
        with pytest.raises(KafkaConnectionError):
            asyncio.run(produce(anonymous, queries))
        with pytest.raises(KafkaError):
            asyncio.run(
                produce(
                    anonymous.with_changes(kafka_security_protocol="SASL_PLAINTEXT", kafka_password="guess"), queries
                )
            )
