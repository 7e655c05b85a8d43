"""``ragstream eval replay``: re-run a recorded window of the ``queries`` log against another model or prompt.

The window is read with a plain consumer (no group, nothing committed): by time (``offsets_for_times`` gives each
partition's first offset at or after ``since`` and the end at ``until``) or by explicit offset ranges. Requests
that evaluation or earlier replays produced (``session_id`` ``eval:``/``replay:``) are skipped unless asked for, so
a replay measures real traffic. Every recorded request is re-issued twice with new request ids, replies routed to
``eval_results``: the baseline with its recorded options and the candidate with the model/prompt replaced (order
alternating per request, so neither side always goes first); see :mod:`processors.evaluation.replay` for why
the baseline is re-run rather than read back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka_security import client_options
from infra.settings import REPO_ROOT, Settings
from processors.citations import strip_citations
from processors.evaluation import metrics as m
from processors.evaluation.replay import Outcome, compare, summarize_replay
from processors.evaluation.scoring import AnswerRecord, safe_name
from processors.reporting.machine import load_average, run_facts
from processors.reporting.report import write_run
from schemas.codec import DecodeError, EventDecoder
from schemas.events import QueryOptions, QueryRequest, ReplyTo, new_id
from schemas.topics import Topic
from streams.clients.evaluation import EvalAsker, EvalClients, Progress, dump_json, new_run_dir, print_progress
from streams.kafka import topic_partitions

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "replay"
SYNTHETIC_PREFIXES = ("eval:", "replay:")
_requests: EventDecoder[QueryRequest] = EventDecoder(QueryRequest)


@dataclass(frozen=True)
class Recorded:
    request: QueryRequest
    partition: int
    offset: int
    timestamp_ms: int


@dataclass
class ReplayConfig:
    since: float | None = None  # Unix seconds
    until: float | None = None
    offsets: dict[int, tuple[int, int | None]] | None = None
    limit: int | None = None
    tenant: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    use_cache: bool = False
    include_synthetic: bool = False
    concurrency: int = 2
    timeout_s: float = 120.0
    out_root: Path = DEFAULT_OUT
    extra: dict[str, Any] = field(default_factory=dict)


async def read_window(settings: Settings, config: ReplayConfig) -> tuple[list[Recorded], dict[str, Any]]:
    """The recorded requests of the window, in timestamp order, and a description of what was read."""
    topic = settings.topic(Topic.QUERIES)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, group_id=None, **client_options(settings)
    )
    await consumer.start()
    found: list[Recorded] = []
    skipped = {"synthetic": 0, "undecodable": 0, "other tenant": 0}
    try:
        tps = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets(tps)
        beginnings = await consumer.beginning_offsets(tps)
        bounds: dict[TopicPartition, tuple[int, int]] = {}
        if config.offsets is not None:
            for tp in tps:
                if tp.partition in config.offsets:
                    first, end = config.offsets[tp.partition]
                    bounds[tp] = (max(first, beginnings[tp]), min(end if end is not None else ends[tp], ends[tp]))
            description = "offsets " + ", ".join(f"{tp.partition}:{a}-{b}" for tp, (a, b) in bounds.items())
        else:
            since_ms = int((config.since or 0) * 1000)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            stops = (
                await consumer.offsets_for_times({tp: int(config.until * 1000) for tp in tps})
                if config.until is not None
                else {}
            )
            for tp in tps:
                start = starts.get(tp)
                if start is None:
                    continue  # nothing at or after `since` in this partition
                stop = stops.get(tp)
                bounds[tp] = (start.offset, stop.offset if stop is not None else ends[tp])
            since_text = dt.datetime.fromtimestamp(config.since or 0, dt.UTC).isoformat()
            until_text = dt.datetime.fromtimestamp(config.until, dt.UTC).isoformat() if config.until else "now"
            description = f"{since_text} to {until_text}"
        bounds = {tp: b for tp, b in bounds.items() if b[1] > b[0]}
        if bounds:
            consumer.assign(list(bounds))
            for tp, (start, _) in bounds.items():
                consumer.seek(tp, start)
            remaining = set(bounds)
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=500)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset >= bounds[tp][1]:
                            remaining.discard(tp)
                            break
                        try:
                            request = _requests.decode(record.value or b"")
                        except DecodeError:
                            skipped["undecodable"] += 1
                            continue
                        if not config.include_synthetic and request.session_id.startswith(SYNTHETIC_PREFIXES):
                            skipped["synthetic"] += 1
                            continue
                        if config.tenant is not None and request.tenant != config.tenant:
                            skipped["other tenant"] += 1
                            continue
                        found.append(Recorded(request, tp.partition, record.offset, record.timestamp))
                for tp in list(remaining):
                    if await consumer.position(tp) >= bounds[tp][1]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    if config.limit is not None:
        found = found[: config.limit]
    return found, {"topic": topic, "description": description, "skipped": skipped, "read": len(found)}


def _outcome(answer: AnswerRecord) -> Outcome:
    return Outcome(
        request_id=answer.request_id,
        text=answer.text,
        refused=answer.refused,
        failed=answer.failed,
        error=answer.error,
        finish_reason=answer.finish_reason,
        chunk_ids=[c.chunk_id for c in answer.citations],
        ttft_ms=answer.ttft_ms,
        total_ms=answer.total_ms,
        model=answer.model,
        prompt_version=answer.prompt_version,
        cached=answer.cached,
    )


def _reissue(
    original: QueryRequest, options: QueryOptions, reply_topic: str, run_id: str, timeout_s: float
) -> QueryRequest:
    return QueryRequest(
        request_id=new_id(),
        tenant=original.tenant,
        question=original.question,
        reply_to=ReplyTo(topic=reply_topic),
        session_id=f"replay:{run_id}",
        options=options,
        deadline=time.time() + timeout_s,
    )


async def replay_requests(
    settings: Settings, config: ReplayConfig, recorded: Sequence[Recorded], run_id: str, progress: Progress
) -> list[tuple[Recorded, AnswerRecord, AnswerRecord]]:
    reply_topic = settings.topic(Topic.EVAL_RESULTS)
    gate = asyncio.Semaphore(max(1, config.concurrency))
    out: list[tuple[Recorded, AnswerRecord, AnswerRecord] | None] = [None] * len(recorded)
    async with EvalAsker(settings, reply_topic=reply_topic) as asker:

        async def one(i: int, item: Recorded) -> None:
            base_options = msgspec.structs.replace(item.request.options, use_cache=config.use_cache)
            changes: dict[str, Any] = {}
            if config.model is not None:
                changes["model"] = config.model
            if config.prompt_version is not None:
                changes["prompt_version"] = config.prompt_version
            cand_options = msgspec.structs.replace(base_options, **changes)
            async with gate:
                base = _reissue(item.request, base_options, reply_topic, run_id, config.timeout_s)
                cand = _reissue(item.request, cand_options, reply_topic, run_id, config.timeout_s)
                if i % 2 == 0:
                    b = await asker.ask(base, timeout_s=config.timeout_s)
                    c = await asker.ask(cand, timeout_s=config.timeout_s)
                else:
                    c = await asker.ask(cand, timeout_s=config.timeout_s)
                    b = await asker.ask(base, timeout_s=config.timeout_s)
            out[i] = (item, b, c)
            if (i + 1) % 10 == 0:
                progress(f"  replayed {sum(1 for x in out if x is not None)}/{len(recorded)}")

        await asyncio.gather(*(one(i, item) for i, item in enumerate(recorded)))
    return [x for x in out if x is not None]


async def run_replay(settings: Settings, config: ReplayConfig, *, progress: Progress = print_progress) -> Path:
    """Read the window, re-issue it twice, compare, and write JSON per request, summary JSON, PNG and Markdown."""
    run_id = uuid.uuid4().hex[:12]
    facts = run_facts()
    recorded, window = await read_window(settings, config)
    progress(
        f"replay {run_id}: {len(recorded)} recorded requests ({window['description']}; skipped {window['skipped']})"
    )
    started = time.perf_counter()
    results = await replay_requests(settings, config, recorded, run_id, progress) if recorded else []
    seconds = time.perf_counter() - started
    clients = EvalClients(settings)
    try:
        vectors = await clients.embed_all([strip_citations(a.text) for _, b, c in results for a in (b, c)])
    finally:
        await clients.close()
    pairs: list[dict[str, Any]] = []
    for item, b, c in results:
        vb, vc = vectors.get(strip_citations(b.text)), vectors.get(strip_citations(c.text))
        similarity = m.cosine(vb, vc) if vb is not None and vc is not None else None
        base, cand = _outcome(b), _outcome(c)
        pairs.append(
            {
                "original": {
                    "request_id": item.request.request_id,
                    "tenant": item.request.tenant,
                    "question": item.request.question,
                    "partition": item.partition,
                    "offset": item.offset,
                    "recorded_at": dt.datetime.fromtimestamp(item.timestamp_ms / 1000, dt.UTC).isoformat(),
                    "options": msgspec.to_builtins(item.request.options),
                },
                "baseline": msgspec.to_builtins(base),
                "candidate": msgspec.to_builtins(cand),
                "diff": compare(base, cand, similarity),
            }
        )
    summary: dict[str, Any] = {
        "kind": "replay",
        "title": "Replay of recorded traffic",
        "run_id": run_id,
        "window": window,
        "baseline": {"model": None, "prompt_version": None},
        "candidate": {"model": config.model, "prompt_version": config.prompt_version},
        "use_cache": config.use_cache,
        "duration_s": round(seconds, 2),
    }
    summary.update(summarize_replay(pairs))
    summary.update(facts, load_average_end=load_average())
    out = new_run_dir(config.out_root, run_id)
    (out / "requests").mkdir()
    for i, pair in enumerate(pairs):
        dump_json(out / "requests" / f"{i:05d}-{safe_name(pair['original']['request_id'])}.json", pair)
    write_run(out, "ragstream replay", summary)
    progress(f"results: {out}")
    return out
