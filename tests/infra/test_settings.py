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
