from __future__ import annotations

import pytest

from infra.settings import Settings


def test_defaults_describe_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_servers == f"127.0.0.1:{settings.kafka_port}"
    assert settings.milvus_address.startswith("http://127.0.0.1:")
    assert settings.redis_address.startswith("redis://127.0.0.1:")


def test_environment_values_are_converted_to_their_types() -> None:
    settings = Settings.from_env({"RAGSTREAM_KAFKA_PORT": "29092", "RAGSTREAM_TRITON_METRICS": "false", "HOME": "/x"})
    assert settings.kafka_port == 29092
    assert settings.triton_metrics is False


def test_addresses_switch_to_external_deployments() -> None:
    settings = Settings.from_env(
        {"RAGSTREAM_KAFKA_BOOTSTRAP": "kafka:9092", "RAGSTREAM_MILVUS_URI": "http://milvus:19530"}
    )
    assert settings.kafka_servers == "kafka:9092"
    assert settings.milvus_address == "http://milvus:19530"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RAGSTREAM_KAFKA_PROT": "1"}, "unknown field"),
        ({"RAGSTREAM_KAFKA_PORT": "ninety"}, "Expected `int`"),
    ],
)
def test_typos_and_bad_values_fail_loudly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_a_local_cluster_lists_every_node_and_replicates_three_ways() -> None:
    single = Settings.from_env({})
    assert (single.replication_factor, single.min_insync_replicas) == (1, 1)
    cluster = Settings.from_env({"RAGSTREAM_KAFKA_BROKERS": "3"})
    assert cluster.kafka_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert [cluster.kafka_node_ports(n) for n in (1, 2, 3)] == [(19092, 19093), (19094, 19095), (19096, 19097)]
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (3, 2)
    production = Settings.from_env(
        {"RAGSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "RAGSTREAM_TOPIC_REPLICATION_FACTOR": "3"}
    )
    assert (production.kafka_servers, production.replication_factor, production.min_insync_replicas) == (
        "k1:9092,k2:9092",
        3,
        2,
    )
