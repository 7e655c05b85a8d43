"""A router tier on a real OpenAI-compatible server, end to end: a worker whose large tier is ``remote``, an
OpenAI-compatible backend that is another ragstream bridge's ``/v1``, and questions sent over Kafka.

Everything runs on the session stack under its own topic prefix (its own topics, consumer group, collection and
tenant), so the session worker never sees these requests. The remote bridge relays to the same worker, which answers
the relayed question with ``llm_echo`` (the backend names it), so the chain is:

    question -> worker (routes tier large -> remote) -> HTTP /v1 -> remote bridge -> worker (llm_echo) -> back

The relayed question is the outer request's rendered RAG prompt, whose rules quote an injection phrase as an
example; the tenant's policy turns the injection check off so the relay is not blocked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.kafka_admin import ensure_topics
from infra.settings import Settings
from infra.stack import Stack, free_ports
from schemas.codec import EventDecoder
from schemas.events import AnswerDone, AnswerError, QueryOptions, QueryRequest, TokenDelta, new_id
from streams.clients.asker import KafkaAsker
from tests.conftest import (
    FROBNICATOR,
    KEY,
    LONG_QUESTION,
    QUESTION,
    BridgeProcess,
    WorkerProcess,
    ingest_folder,
    wait_worker_ready,
)
from tests.streams.bridge.test_bridge_server import TopicTail

REMOTE = "remote"


@dataclass
class TierStack:
    settings: Settings  # what clients use: the prefix, the tenant
    tenant: str
    worker: WorkerProcess
    remote_settings: Settings
    logs: Path
    remote: BridgeProcess | None = None

    async def start_remote(self) -> BridgeProcess:
        self.remote = BridgeProcess(self.remote_settings, self.logs / "remote-bridge.log")
        await self.remote.wait_ready()
        return self.remote

    @property
    def remote_journal(self) -> str:
        return self.remote_settings.bridge_reply_topic(self.remote_settings.bridge_instance)


@pytest.fixture(scope="module")
async def tier(
    stack: Stack, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TierStack]:
    prefix = f"tier{new_id()[:6]}"
    tenant = f"tenant{new_id()[:6]}"
    remote_port, web_port = free_ports(2)
    base = stack_settings.with_changes(topic_prefix=prefix, app_id=prefix, api_keys=f"{KEY}:{tenant}")
    await ensure_topics(base)
    backends = {
        REMOTE: {
            "base_url": f"http://127.0.0.1:{remote_port}/v1",
            "api_key": KEY,
            "model": "llm_echo",
            "extra_body": {"ragstream": {"use_cache": False}},
        }
    }
    worker_settings = base.with_changes(
        worker_web_port=web_port,
        openai_backends=json.dumps(backends),
        llm_large_model=REMOTE,
        llm_small_model="llm_echo",  # the fallback when the remote fails before its first token
        router_overrides=f"{tenant}:large",
        guard_policies=json.dumps({"tenants": {tenant: {"injection_action": "off"}}}),
    )
    logs = tmp_path_factory.mktemp("tier")
    worker = WorkerProcess(worker_settings, logs / "worker.log")
    worker.start()
    remote_settings = base.with_changes(bridge_port=remote_port, bridge_instance=f"{prefix}-remote")
    setup = TierStack(base, tenant, worker, remote_settings, logs)
    try:
        docs = logs / "docs"
        docs.mkdir()
        (docs / "frobnicator.md").write_text(FROBNICATOR)
        await ingest_folder(base, docs, tenant)
        await wait_worker_ready(base, worker)
        await setup.start_remote()
        yield setup
    finally:
        if setup.remote is not None:
            setup.remote.terminate()
        worker.stop()


async def answer(
    asker: KafkaAsker, settings: Settings, tenant: str, question: str, **options: object
) -> tuple[list[TokenDelta], AnswerDone | AnswerError]:
    request_id = await asker.send(question, tenant=tenant, options=QueryOptions(use_cache=False, **options))  # type: ignore[arg-type]
    deltas: list[TokenDelta] = []
    async for event in asker.events(request_id, timeout_s=60):
        if isinstance(event, TokenDelta):
            deltas.append(event)
        else:
            return deltas, event
    raise AssertionError("no done or error")


_journal: EventDecoder[QueryRequest] = EventDecoder(QueryRequest)


def relayed(value: bytes) -> bool:
    try:
        request = _journal.decode(value)
    except Exception:
        return False
    return request.options.model == "llm_echo"


async def test_a_query_routed_to_the_remote_tier_is_answered_through_the_openai_compatible_server(
    tier: TierStack,
) -> None:
    async with KafkaAsker(tier.settings) as asker, TopicTail(tier.settings, tier.remote_journal) as journal:
        deltas, done = await answer(asker, tier.settings, tier.tenant, QUESTION)
        relay = _journal.decode(await journal.wait_for(lambda _key, value: relayed(value)))
    assert isinstance(done, AnswerDone), done
    assert done.model == REMOTE and done.finish_reason in ("stop", "length")
    assert len(deltas) > 1 and "".join(d.text for d in deltas) == done.text
    # The remote answered the outer request's prompt (llm_echo streams back its own prompt, which contains it).
    assert relay.tenant == tier.tenant and QUESTION in relay.question
    assert "frobnicator" in done.text.lower() and done.citations


async def test_a_remote_killed_before_its_first_token_leaves_the_answer_to_the_fallback(tier: TierStack) -> None:
    assert tier.remote is not None
    async with KafkaAsker(tier.settings) as asker, TopicTail(tier.settings, tier.remote_journal) as journal:
        pending = asyncio.create_task(answer(asker, tier.settings, tier.tenant, f"{QUESTION} Killed early."))
        await journal.wait_for(lambda _key, value: relayed(value))  # the remote took it; its prepare is running
        tier.remote.proc.kill()
        deltas, done = await pending
    await asyncio.to_thread(tier.remote.terminate)
    assert isinstance(done, AnswerDone), done
    # The fallback's echo of the RAG prompt quotes its injection example, which the output guard may stop: still
    # the fallback's answer, not an error.
    assert done.model == "llm_echo" and done.finish_reason in ("stop", "length", "blocked")
    assert deltas and "".join(d.text for d in deltas) == done.text


async def test_a_remote_stopped_mid_stream_ends_that_answer_with_an_error_and_the_fallback_answers_the_next(
    tier: TierStack,
) -> None:
    remote = await tier.start_remote()
    async with KafkaAsker(tier.settings) as asker:
        request_id = await asker.send(
            f"{LONG_QUESTION} Stopped mid-stream.",
            tenant=tier.tenant,
            options=QueryOptions(use_cache=False, max_tokens=900),
        )
        events = asker.events(request_id, timeout_s=60)
        first = await anext(events)
        assert isinstance(first, TokenDelta), first  # the remote is streaming
        await asyncio.to_thread(remote.terminate)
        rest = [event async for event in events]
        end = rest[-1]
        # Text was already sent, so no other model takes over; the client is told, not left waiting.
        assert isinstance(end, AnswerError), end
        assert end.stage == "generate"

        deltas, done = await answer(asker, tier.settings, tier.tenant, f"{QUESTION} After the stop.")
    assert isinstance(done, AnswerDone), done
    assert done.model == "llm_echo" and deltas
