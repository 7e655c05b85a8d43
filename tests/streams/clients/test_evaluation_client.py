"""``ragstream eval`` and ``ragstream eval replay`` end to end on the real stack."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from infra.settings import Settings
from processors.evaluation.golden import DEFAULT_FAQ_DIR, build_faq_golden, write_golden
from schemas.codec import any_event_decoder
from schemas.events import AnswerDone, EvalCaseEvent, EvalCaseResult, QueryOptions
from schemas.topics import Topic
from streams.clients.evaluation import EvalConfig, evaluate, run_eval
from streams.clients.replay import ReplayConfig, run_replay
from streams.kafka import topic_partitions

GENERAL = DEFAULT_FAQ_DIR / "general.html"


# --- against the real stack ------------------------------------------------------------------------------------


async def _read_topic(settings: Settings, key: Topic) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        topic = settings.topic(key)
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        events: list[Any] = []
        pending = [tp for tp in tps if ends[tp] > 0]
        while pending:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                events.extend(any_event_decoder.decode(r.value) for r in records if r.value)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
        return events
    finally:
        await consumer.stop()


@pytest.mark.services
@pytest.mark.timeout(900)
async def test_eval_and_replay_end_to_end(
    stack_settings: Settings, worker: object, tmp_path: Path, python_docs: Path
) -> None:
    from streams.clients import ingest as ingest_client
    from streams.clients.asker import KafkaAsker

    corpus = tmp_path / "faq"
    corpus.mkdir()
    shutil.copy(GENERAL, corpus / "general.html")
    tenant = "evaltest"
    report = await ingest_client.ingest(stack_settings, [corpus], tenant, timeout_s=300, progress=False)
    assert report.ok and report.chunks > 0, ingest_client.format_report(report)

    cases = build_faq_golden(corpus, corpus_root=corpus, refusals=[("risotto", "How long do I stir a risotto?")])
    wanted = {"What is Python?", "Why is it called Python?", "How stable is Python?"}
    golden = tmp_path / "golden.jsonl"
    write_golden([c for c in cases if c.question in wanted or c.expect_refusal], golden)

    config = EvalConfig(
        golden=golden,
        tenant=tenant,
        model="llm_echo",
        use_cache=False,
        max_tokens=24,
        concurrency=2,
        timeout_s=90,
        out_root=tmp_path / "results",
    )
    out = await run_eval(stack_settings, config, progress=lambda _: None)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["answerable"] == 3 and summary["refusal_expected"] == 1
    quality = summary["quality"]
    assert quality["error_rate"] == 0.0, [json.loads(p.read_text())["error"] for p in (out / "cases").iterdir()]
    for key in ("pass_rate", "refusal_correctness", "context_relevance"):
        assert isinstance(quality[key], float) and 0.0 <= quality[key] <= 1.0, key
    # a refusal or an input-guard block has no streamed text, so TTFT may have fewer samples than cases
    assert summary["latency_ms"]["ttft"]["n"] >= 1 and summary["latency_ms"]["total"]["n"] == 4
    assert summary["latency_ms"]["total"]["p50"] > 0
    retrieval = summary["retrieval"]
    assert retrieval["cases"] == 3
    for mode in ("dense", "bm25", "hybrid", "hybrid+rerank"):
        assert 0.0 <= retrieval["modes"][mode]["ndcg_at_10"] <= 1.0, mode
        assert 0.0 <= retrieval["modes"][mode]["recall_at_20"] <= 1.0, mode
    # one small page: the answer span is among the top 20 chunks in every mode
    assert retrieval["modes"]["hybrid"]["recall_at_20"] == 1.0
    assert retrieval["verdict"]["verdict"] and retrieval["verdict"]["recommendation"]
    case_files = sorted((out / "cases").glob("*.json"))
    assert len(case_files) == 4
    what = json.loads((out / "cases" / "faq_general_what-is-python.json").read_text())
    assert what["answer"]["text"] and what["answer"]["finish_reason"] and what["answer"]["request_id"]
    assert what["retrieval"]["hybrid+rerank"]["top"]
    for figure in ("quality.png", "retrieval.png", "latency.png"):
        assert (out / figure).stat().st_size > 1000, figure
    markdown = (out / "summary.md").read_text()
    assert "Commit:" in markdown and "CPUs (`nproc`)" in markdown and "nDCG@10" in markdown
    assert "![" in markdown and "hybrid+rerank" in markdown

    # Answers for a sample; retrieval (no generation) still judged on every answerable case of the golden set.
    sampled, records = await evaluate(stack_settings, dataclasses.replace(config, limit=2), progress=lambda _: None)
    assert len(records) == 2 and sum(not r.expect_refusal for r in records) == 1
    assert sampled.retrieval is not None and sampled.retrieval.cases == 3

    # cases went out on eval_cases, scored results came back on eval_results, keyed to this run
    run_id = summary["run_id"]
    sent = [e for e in await _read_topic(stack_settings, Topic.EVAL_CASES) if isinstance(e, EvalCaseEvent)]
    assert sorted(e.case_id for e in sent if e.run_id == run_id) == sorted(
        json.loads(p.read_text())["id"] for p in case_files
    )
    results = await _read_topic(stack_settings, Topic.EVAL_RESULTS)
    scored = [e for e in results if isinstance(e, EvalCaseResult) and e.run_id == run_id]
    answered = {e.request_id for e in results if isinstance(e, AnswerDone)}
    assert len(scored) == 4 and {e.request_id for e in scored} <= answered

    # replay: two real requests recorded now, re-run with a changed max length; the eval traffic is skipped
    since = time.time() - 1
    async with KafkaAsker(stack_settings) as asker:
        for question in ("What is Python?", "How long do I stir a risotto?"):
            request_id = await asker.send(
                question, tenant=tenant, options=QueryOptions(model="llm_echo", max_tokens=16)
            )
            async for _ in asker.events(request_id, timeout_s=60):
                pass
    replay_out = await run_replay(
        stack_settings,
        ReplayConfig(since=since, model="llm_echo", tenant=tenant, out_root=tmp_path / "replay"),
        progress=lambda _: None,
    )
    replay = json.loads((replay_out / "summary.json").read_text())
    assert replay["requests"] == 2, replay["window"]
    assert replay["errors"] == {"baseline": 0, "candidate": 0}
    assert replay["latency_ms"]["total"]["baseline"]["n"] == 2 and replay["latency_ms"]["total"]["candidate"]["n"] == 2
    assert set(replay["refusals"]) >= {"newly refused", "newly answered"}
    assert len(list((replay_out / "requests").glob("*.json"))) == 2
    assert "Replay of recorded traffic" in (replay_out / "summary.md").read_text()
    pair = msgspec.json.decode((sorted((replay_out / "requests").glob("*.json"))[0]).read_bytes())
    assert pair["baseline"]["request_id"] != pair["candidate"]["request_id"] != pair["original"]["request_id"]
