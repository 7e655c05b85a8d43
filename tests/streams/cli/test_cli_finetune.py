"""``ragstream finetune`` end to end on a real Kafka (only Kafka is started) and the real training job in the model
environment, kept tiny (two optimizer steps, a handful of held-out cases, one torch thread):

* ``run`` builds, trains, answers the held-out split with base and adapter, gates, registers, writes the report,
  and its progress and result are events on the finetune topic;
* an adapter trained on shuffled answers is refused by the gate, ``promote`` refuses it, ``--force`` overrides and
  ``rollback`` returns the tenant to the base model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from infra.settings import Settings
from infra.stack import Stack
from processors.evaluation.golden import load_golden
from processors.finetune.dataset import TrainingSet, build_training_set, data_hash
from schemas.codec import any_event_decoder
from schemas.events import FinetuneProgress, FinetuneResult
from schemas.finetune import FinetuneConfig, GateThresholds
from schemas.topics import Topic
from streams.clients.adapter_store import KafkaAdapterStore
from streams.clients.finetune import run_finetune
from tests.conftest import isolated_settings, settings_env

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "benchmarks" / "eval" / "golden" / "python_docs.jsonl"
TINY = FinetuneConfig(max_steps=2, batch_size=2, max_seq_len=256, rank=4, alpha=8, max_eval_cases=4,
                      eval_max_new_tokens=20, gate=GateThresholds(min_heldout_cases=1))  # fmt: skip


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = isolated_settings(tmp_path_factory.mktemp("finetune"))
    stack = Stack(settings)
    try:
        stack.up(["kafka"])
        yield settings
    finally:
        stack.down(["kafka"])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "PYTHONPATH": str(REPO), "NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "streams", "finetune", *args], capture_output=True, text=True,
                          env=env, timeout=900, check=False, cwd=REPO)  # fmt: skip


async def _events(settings: Settings, run_id: str) -> list[object]:
    consumer = AIOKafkaConsumer(settings.topic(Topic.FINETUNE), bootstrap_servers=settings.kafka_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)  # fmt: skip
    await consumer.start()
    try:
        found: list[object] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return found
            for records in batch.values():
                for record in records:
                    if record.key == run_id.encode():
                        found.append(any_event_decoder.decode(record.value))
    finally:
        await consumer.stop()


def test_run_reports_progress_and_result_on_kafka_and_writes_the_report(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(GOLDEN.read_text().splitlines()[:40]) + "\n")
    config = tmp_path / "config.json"
    config.write_bytes(msgspec.json.encode(TINY))
    result = _cli(kafka_settings, "run", "--tenant", tenant, "--golden", str(golden), "--config", str(config),
                  "--threads", "1")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.startswith(("promoted: adapter", "rejected: adapter")), result.stdout
    report_path = Path(result.stdout.split("report: ")[1].strip())
    report = report_path.read_text()
    for heading in ("## Data", "## Config", "## Training", "## Held-out evaluation", "**Decision: "):
        assert heading in report
    assert '"rank": 4' in report and "Loss curve (first " in report and "| citation_rate |" in report
    summary = json.loads((report_path.parent / "report.json").read_text())
    assert summary["training"]["steps"] == 2 and len(summary["training"]["loss_curve"]) == 2
    assert summary["eval_cases"] == 4 and summary["sizes"]["train"] > 0
    answers = (report_path.parent / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 8  # 4 held-out cases, base and adapter

    events = asyncio.run(_events(kafka_settings, summary["run_id"]))
    progress = [e for e in events if isinstance(e, FinetuneProgress)]
    phases = [e.phase for e in progress]
    assert phases[0] == "build" and phases[-1] == "done"
    assert {"train", "eval", "gate"} <= set(phases)
    steps = [e for e in progress if e.phase == "train" and e.loss is not None]
    assert [e.step for e in steps] == [1, 2] and all(e.step_ms and e.step_ms > 0 for e in steps)
    assert [e.loss for e in steps] == summary["training"]["loss_curve"]
    (final,) = [e for e in events if isinstance(e, FinetuneResult)]
    assert final.decision == summary["decision"] and final.adapter is not None
    assert final.adapter.version == "1" and final.adapter.base_model == "llm_small"
    assert final.report_path == str(report_path)
    assert final.base_metrics["cases"] == 4.0

    listing = _cli(kafka_settings, "list", tenant)
    assert listing.returncode == 0 and f"{tenant:<20} 1 " in listing.stdout, listing.stdout
    adapter_dir = Path(next(line.split()[-1] for line in listing.stdout.splitlines() if line.startswith(tenant)))
    assert (adapter_dir / "adapter_model.safetensors").is_file() and (adapter_dir / "manifest.json").is_file()


def _shuffled(data: TrainingSet) -> TrainingSet:
    """Every training example taught someone else's answer (and the held-out split left as it was)."""
    train = [i for i, e in enumerate(data.examples) if e.split == "train"]
    examples = list(data.examples)
    for n, i in enumerate(train):
        donor = data.examples[train[(n + 5) % len(train)]]
        examples[i] = msgspec.structs.replace(examples[i], answer=donor.answer)
    return msgspec.structs.replace(data, examples=examples, data_hash=data_hash(examples))


def test_an_adapter_trained_on_shuffled_answers_is_refused_and_rollback_returns_to_the_base(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = "shuffled"  # fixed: the held-out split (chosen by tenant and case) is the same in every run
    # a learning rate far too high on wrong answers: the adapter is worse than the base, not merely no better
    config = msgspec.structs.replace(TINY, max_steps=4, learning_rate=5e-2, max_eval_cases=6)
    cases = load_golden(GOLDEN)[:60]
    bad = _shuffled(build_training_set(tenant, cases, [], config))
    monkeypatch.setenv("NO_PROGRESS", "1")  # the training job's bar, in the test's log
    outcome = asyncio.run(run_finetune(kafka_settings, tenant, config, training_set=bad, threads=1))
    report = outcome.summary.report
    assert outcome.result.decision == "rejected" and not report.promote and report.reasons
    assert (report.adapter.correctness or 0.0) < (report.base.correctness or 0.0)
    assert any(reason.startswith("correctness") for reason in report.reasons), report.reasons
    assert outcome.summary.active_after == ""  # the tenant still answers with the base model

    refused = _cli(kafka_settings, "promote", tenant, "1")
    assert refused.returncode == 1 and "does not beat the base model" in refused.stderr, refused.stderr
    forced = _cli(kafka_settings, "promote", tenant, "1", "--force")
    assert forced.returncode == 0 and "active adapter 1" in forced.stdout, forced.stdout + forced.stderr
    back = _cli(kafka_settings, "rollback", tenant)
    assert back.returncode == 0 and "rolled back to the base model" in back.stdout, back.stdout + back.stderr

    async def state() -> tuple[str, object]:
        async with KafkaAdapterStore(kafka_settings) as store:
            return store.state.active_version(tenant), store.state.active_ref(tenant)

    assert asyncio.run(state()) == ("", None)
