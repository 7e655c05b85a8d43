"""Fine-tune config and events: validation, stable digests, wire round trips."""

from __future__ import annotations

import msgspec
import pytest

from schemas.codec import any_event_decoder, encode
from schemas.events import AdapterRef, FinetuneProgress, FinetuneResult
from schemas.finetune import FinetuneConfig, GateThresholds, load_config
from schemas.topics import BY_TOPIC, Topic


def test_defaults_are_valid_and_the_digest_is_stable_and_sensitive() -> None:
    config = FinetuneConfig().validate()
    assert config.digest() == FinetuneConfig().digest()
    assert msgspec.structs.replace(config, rank=16).digest() != config.digest()
    assert msgspec.structs.replace(config, gate=GateThresholds(min_citation_gain=0.1)).digest() != config.digest()


def test_out_of_range_fields_are_all_named() -> None:
    with pytest.raises(ValueError, match=r"rank must be >= 1.*dropout must be in \[0, 1\)"):
        FinetuneConfig(rank=0, dropout=1.5).validate()


def test_json_config_fills_defaults_and_rejects_typos() -> None:
    config = load_config(b'{"rank": 4, "epochs": 2, "gate": {"min_correctness_gain": 0.05}}')
    assert (config.rank, config.epochs, config.alpha) == (4, 2, 16)
    assert config.gate.min_correctness_gain == 0.05
    with pytest.raises(msgspec.ValidationError, match="ranks"):
        load_config(b'{"ranks": 4}')
    with pytest.raises(ValueError, match="batch_size"):
        load_config(b'{"batch_size": 0}')


def test_finetune_events_round_trip_through_the_union_decoder() -> None:
    ref = AdapterRef(name="acme", version="2", content_hash="c" * 64, base_model="llm_small", data_hash="d" * 64)
    events = [
        FinetuneProgress(run_id="r", tenant="acme", phase="train", step=3, total_steps=10, loss=1.25, step_ms=800.0),
        FinetuneResult(
            run_id="r",
            tenant="acme",
            decision="rejected",
            adapter=ref,
            reasons=["citation rate 0.40 < base 0.55"],
            base_metrics={"citation_rate": 0.55},
            adapter_metrics={"citation_rate": 0.40},
        ),
    ]
    for event in events:
        decoded = any_event_decoder.decode(encode(event))
        assert decoded == event
        assert type(decoded) is type(event)
    assert msgspec.msgpack.decode(encode(events[0]))["kind"] == "finetune.progress"


def test_the_finetune_topic_is_declared() -> None:
    spec = BY_TOPIC[Topic.FINETUNE]
    assert spec.name("ragstream") == "ragstream.finetune.v1"
    assert spec.partitions == 1
