"""The adapter registry on a real Kafka (only Kafka started): a candidate the gate refused cannot be promoted, a
promotion and a rollback reach another running instance, and a restarted store reads the same state."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from infra.stack import Stack
from processors.finetune.registry import BASE, AdapterError
from schemas.finetune import AdapterEvalReport, AdapterMetrics, GateThresholds
from schemas.topics import Topic
from streams.clients.adapter_store import KafkaAdapterStore
from tests.conftest import isolated_settings

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = isolated_settings(tmp_path_factory.mktemp("adapters"))
    stack = Stack(settings)
    try:
        stack.up(["kafka"])
        yield settings
    finally:
        stack.down(["kafka"])


def _metrics(correctness: float, citation_rate: float) -> AdapterMetrics:
    return AdapterMetrics(cases=20, answerable=16, correctness=correctness, citation_rate=citation_rate,
                          false_refusal_rate=0.0, refusal_recall=1.0)  # fmt: skip


def _report(better: bool) -> AdapterEvalReport:
    base, adapter = _metrics(0.5, 0.4), _metrics(0.6, 0.7) if better else _metrics(0.3, 0.2)
    reasons = [] if better else ["correctness 0.300 vs base 0.500: gain -0.200 < +0.000"]
    return AdapterEvalReport(base=base, adapter=adapter, promote=better, reasons=reasons, thresholds=GateThresholds())


async def _until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s}s"
        await asyncio.sleep(0.02)


async def test_gate_promotion_rollback_and_restart_on_kafka(kafka_settings: Settings, tmp_path: Path) -> None:
    tenant, other = f"t{uuid.uuid4().hex[:8]}", f"u{uuid.uuid4().hex[:8]}"
    async with KafkaAdapterStore(kafka_settings) as operator, KafkaAdapterStore(kafka_settings) as server:
        assert operator.topic == kafka_settings.topic(Topic.ADAPTERS)
        good, created = await operator.register(tenant, content_hash="a" * 64, base_model="llm_small",
                                                path=str(tmp_path / "a"), report=_report(better=True))  # fmt: skip
        assert created and good.adapter.version == "1"
        bad, _ = await operator.register(tenant, content_hash="b" * 64, base_model="llm_small",
                                         path=str(tmp_path / "b"), report=_report(better=False))  # fmt: skip
        assert bad.adapter.version == "2"
        again, created_again = await server.register(tenant, content_hash="a" * 64, base_model="llm_small", path="/x")
        assert not created_again and again == good
        with pytest.raises(AdapterError, match=r"does not beat the base model: correctness 0\.300"):
            await operator.promote(tenant, "2")
        assert await operator.promote(tenant, "1") == good.adapter
        await _until(lambda: server.state.active_ref(tenant) == good.adapter)
        assert server.state.active_version(other) == BASE
        await operator.promote(tenant, "2", force=True)
        assert await operator.rollback(tenant) == good.adapter
        await _until(lambda: server.state.history(tenant) == ["1"])
        assert await server.rollback(tenant) is None  # back to the base model
        await _until(lambda: operator.state.active_version(tenant) == BASE)
    async with KafkaAdapterStore(kafka_settings) as restarted:
        assert [r.adapter for r in restarted.state.versions(tenant)] == [good.adapter, bad.adapter]
        assert restarted.state.get(tenant, "2") == bad
        assert restarted.state.active_version(tenant) == BASE and restarted.state.history(tenant) == []
