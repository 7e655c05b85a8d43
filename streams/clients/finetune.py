"""``ragstream finetune``'s job: build -> train -> answer the held-out split with base and adapter -> gate -> register
(and promote when the gate passes), reporting progress and the result as events on the ``finetune.v1`` topic.

Training and answering run in the model environment (``settings.triton_python``: torch, transformers, peft) as a
subprocess of ``triton_models/cpu/_shared/lora_train.py``, which prints one JSON line per step; this side turns the
lines into :class:`~schemas.events.FinetuneProgress` events and a progress display. The adapter is copied to
``<data dir>/adapters/<tenant>/<sha256[:16]>`` (immutable, what a model server loads) and registered on the adapter
registry with its evaluation report. Everything of a run is kept under ``<data dir>/finetune/<tenant>/<stamp>``:
the training set, the config, the logs, the answers, ``report.md`` and ``report.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from aiokafka import AIOKafkaProducer

from infra.settings import REPO_ROOT, Settings
from processors.evaluation.golden import GoldenCase
from processors.finetune.dataset import TrainingExample, TrainingSet, build_training_set, to_jsonl
from processors.finetune.gate import evaluate
from processors.finetune.report import FinetuneSummary, TrainingStats, render_markdown
from processors.ingest.chunking import make_chunker
from processors.ingest.documents import build_chunks
from schemas.codec import encode
from schemas.events import FinetunePhase, FinetuneProgress, FinetuneResult, Passage, new_id
from schemas.finetune import FinetuneConfig
from schemas.topics import Topic
from streams.clients.adapter_store import KafkaAdapterStore
from streams.clients.ingest import discover, make_event

TRAIN_SCRIPT = REPO_ROOT / "triton_models" / "cpu" / "_shared" / "lora_train.py"

ProgressCallback = Callable[[FinetuneProgress], None]


class FinetuneError(RuntimeError):
    """The job could not finish; the message says where (and the run folder keeps the logs)."""


def corpus_passages(paths: Sequence[str | Path], *, tenant: str, root: str | Path | None = None) -> list[Passage]:
    """The tenant's documents as the indexer chunks them (same loader, chunker and doc ids as ``ragstream
    ingest``), as passages for the training-set builder."""
    sources, _skipped = discover(paths, root=root)
    chunker = make_chunker("token")
    passages: list[Passage] = []
    for source in sources:
        data = source.path.read_bytes()
        event = make_event(source, data, tenant, 1)
        try:
            chunks = build_chunks(event, chunker, event.content_hash)
        except ValueError:
            continue  # a document the loader cannot read is not training data
        passages.extend(
            Passage(chunk_id=c.chunk_id, doc_id=c.doc_id, text=c.text, score=0.0, source_uri=c.source_uri,
                    title=c.title, heading_path=list(c.heading_path), char_start=c.char_start, char_end=c.char_end)
            for c in chunks
        )  # fmt: skip
    return passages


def eval_cases(training_set: TrainingSet, limit: int) -> list[TrainingExample]:
    """The held-out examples both models answer: all of them, or ``limit`` spread evenly over them."""
    held = training_set.split("heldout")
    if limit <= 0 or len(held) <= limit:
        return held
    step = len(held) / limit
    return [held[int(i * step)] for i in range(limit)]


@dataclass
class FinetuneOutcome:
    run_dir: Path
    summary: FinetuneSummary
    result: FinetuneResult


class _Events:
    """The run's events on Kafka (keyed by run id) and to the local display."""

    def __init__(self, settings: Settings, run_id: str, tenant: str, on_progress: ProgressCallback | None) -> None:
        self.topic = settings.topic(Topic.FINETUNE)
        self.run_id = run_id
        self.tenant = tenant
        self.on_progress = on_progress
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5)

    async def progress(
        self,
        phase: FinetunePhase,
        *,
        step: int = 0,
        total_steps: int = 0,
        loss: float | None = None,
        step_ms: float | None = None,
        message: str = "",
    ) -> None:
        event = FinetuneProgress(run_id=self.run_id, tenant=self.tenant, phase=phase, step=step,
                                 total_steps=total_steps, loss=loss, step_ms=step_ms, message=message)  # fmt: skip
        if self.on_progress is not None:
            self.on_progress(event)
        await self.producer.send(self.topic, encode(event), key=self.run_id.encode())

    async def result(self, event: FinetuneResult) -> None:
        await self.producer.send_and_wait(self.topic, encode(event), key=self.run_id.encode())


async def _run_script(
    settings: Settings, args: Sequence[str], log_path: Path, on_line: Callable[[dict[str, object]], object]
) -> None:
    """Run the training script in the model environment; each JSON stdout line goes to ``on_line`` (awaited when
    it returns an awaitable), stderr to ``log_path``."""
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            str(settings.triton_python), str(TRAIN_SCRIPT), *args,
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("{"):
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue
                awaited = on_line(message)
                if asyncio.iscoroutine(awaited):
                    await awaited
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
    if code != 0:
        tail = _log_tail(log_path)
        raise FinetuneError(f"{TRAIN_SCRIPT.name} {args[0]} exited with {code}; log {log_path}:\n{tail}")


def _log_tail(path: Path, chars: int = 1500) -> str:
    return path.read_text("utf-8", "replace")[-chars:]


def _run_dir(settings: Settings, tenant: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.data_path / "finetune" / tenant / stamp
    suffix = 0
    while path.exists():
        suffix += 1
        path = settings.data_path / "finetune" / tenant / f"{stamp}-{suffix}"
    path.mkdir(parents=True)
    return path


async def run_finetune(
    settings: Settings,
    tenant: str,
    config: FinetuneConfig,
    *,
    golden: Sequence[GoldenCase] = (),
    passages: Sequence[Passage] = (),
    training_set: TrainingSet | None = None,
    threads: int = 0,
    promote: bool = True,
    on_progress: ProgressCallback | None = None,
) -> FinetuneOutcome:
    """The whole job; ``training_set`` replaces the build step (tests pass a deliberately bad one)."""
    config.validate()
    run_id = new_id()
    run_dir = _run_dir(settings, tenant)
    events = _Events(settings, run_id, tenant, on_progress)
    await events.producer.start()
    try:
        return await _job(settings, tenant, config, golden, passages, training_set, threads, promote, run_id,
                          run_dir, events)  # fmt: skip
    except Exception as exc:
        await events.progress("failed", message=str(exc)[:2000])
        await events.result(FinetuneResult(run_id=run_id, tenant=tenant, decision="failed", error=str(exc)[:2000]))
        raise
    finally:
        await events.producer.stop()


async def _job(
    settings: Settings,
    tenant: str,
    config: FinetuneConfig,
    golden: Sequence[GoldenCase],
    passages: Sequence[Passage],
    training_set: TrainingSet | None,
    threads: int,
    promote: bool,
    run_id: str,
    run_dir: Path,
    events: _Events,
) -> FinetuneOutcome:
    # build
    await events.progress("build", message="building the training set")
    data = training_set or build_training_set(tenant, golden, passages, config)
    sizes = data.sizes()
    if sizes["train"] == 0:
        raise FinetuneError("the training set has no training examples (no golden cases or chunks?)")
    heldout = eval_cases(data, config.max_eval_cases)
    (run_dir / "data.jsonl").write_bytes(to_jsonl(data.examples))
    (run_dir / "heldout.jsonl").write_bytes(to_jsonl(heldout))
    (run_dir / "config.json").write_bytes(msgspec.json.format(msgspec.json.encode(config), indent=2))
    await events.progress("build", message=f"{sizes['train']} train, {sizes['heldout']} held-out examples")
    thread_args = ["--threads", str(threads)] if threads else []

    # train
    adapter_dir = run_dir / "adapter"

    async def on_train(message: dict[str, object]) -> None:
        if message.get("event") == "step":
            await events.progress("train", step=_int(message["step"]), total_steps=_int(message["total"]),
                                  loss=_float(message["loss"]), step_ms=_float(message["step_ms"]))  # fmt: skip
        elif message.get("event") == "start":
            await events.progress("train", step=0, total_steps=_int(message["total"]),
                                  message=f"{message.get('trainable_params')} trainable parameters")  # fmt: skip

    await _run_script(settings, ["train", "--data", str(run_dir / "data.jsonl"), "--config",
                                 str(run_dir / "config.json"), "--out", str(adapter_dir), "--data-hash",
                                 data.data_hash, "--config-hash", config.digest(), *thread_args],
                      run_dir / "train.log", on_train)  # fmt: skip
    manifest = json.loads((adapter_dir / "manifest.json").read_text("utf-8"))
    training = TrainingStats(steps=int(manifest["steps"]), loss_curve=list(manifest["loss_curve"]),
                             step_ms=list(manifest["step_ms"]), train_s=float(manifest["train_s"]),
                             trainable_params=int(manifest.get("trainable_params", 0)),
                             threads=int(manifest.get("torch_threads", 0)))  # fmt: skip

    # answer the held-out split with base and adapter
    answers_path = run_dir / "answers.jsonl"
    total = 2 * len(heldout)
    done = 0

    async def on_answer(message: dict[str, object]) -> None:
        nonlocal done
        if message.get("event") == "answer":
            done += 1
            await events.progress("eval", step=done, total_steps=total, message=str(message.get("variant")))

    await events.progress("eval", step=0, total_steps=total, message="answering the held-out split")
    began = time.monotonic()
    await _run_script(settings, ["answer", "--data", str(run_dir / "heldout.jsonl"), "--config",
                                 str(run_dir / "config.json"), "--adapter", str(adapter_dir), "--out",
                                 str(answers_path), *thread_args],
                      run_dir / "answer.log", on_answer)  # fmt: skip
    eval_s = time.monotonic() - began
    answers: dict[str, dict[str, str]] = {"base": {}, "adapter": {}}
    for line in answers_path.read_text("utf-8").splitlines():
        row = json.loads(line)
        answers[row["variant"]][row["id"]] = row["text"]

    # gate, register, promote
    report = evaluate(heldout, answers["base"], answers["adapter"], config.gate)
    await events.progress("gate", message="promote" if report.promote else "; ".join(report.reasons)[:2000])
    serving_dir = settings.adapters_path / tenant / manifest["content_hash"][:16]
    if not serving_dir.exists():
        serving_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = serving_dir.with_name(f".{serving_dir.name}.{run_id[:8]}")
        shutil.copytree(adapter_dir, tmp)
        tmp.rename(serving_dir)
    async with KafkaAdapterStore(settings) as store:
        registered, _created = await store.register(
            tenant, content_hash=manifest["content_hash"], base_model=config.base_model, path=str(serving_dir),
            data_hash=data.data_hash, config_hash=config.digest(), report=report, run_id=run_id,
        )  # fmt: skip
        if report.promote and promote:
            await store.promote(tenant, registered.adapter.version)
        active_after = store.state.active_version(tenant)
    decision: Literal["promoted", "rejected"] = "promoted" if report.promote and promote else "rejected"
    reasons = list(report.reasons) or ([] if promote else ["passed the gate; not promoted (--no-promote)"])
    summary = FinetuneSummary(
        run_id=run_id, tenant=tenant, created_at=time.time(), config=config, data_hash=data.data_hash, sizes=sizes,
        eval_cases=len(heldout), training=training, eval_s=round(eval_s, 1), report=report,
        adapter=registered.adapter, decision=decision, active_after=active_after,
        machine=f"{platform.machine()}, {_cpus()} CPUs, load {_load()}",
    )  # fmt: skip
    (run_dir / "report.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n")
    (run_dir / "report.md").write_text(render_markdown(summary), "utf-8")
    result = FinetuneResult(
        run_id=run_id, tenant=tenant, decision=decision, adapter=registered.adapter, reasons=reasons,
        base_metrics=report.base.as_dict(), adapter_metrics=report.adapter.as_dict(),
        report_path=str(run_dir / "report.md"),
    )  # fmt: skip
    await events.progress("done", message=decision)
    await events.result(result)
    return FinetuneOutcome(run_dir=run_dir, summary=summary, result=result)


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float | str) else 0.0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _load() -> str:
    import os

    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"
