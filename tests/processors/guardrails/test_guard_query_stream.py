"""The output guard inside the query processor: a stream cut mid-entity (max_tokens or cancel) never sends a piece
of it, to the client or in the final answer. Real guards and prompts; in-memory retrieval and scripted models."""

from __future__ import annotations

import re
import time

import msgspec
import pytest

from processors.adapters.memory import HashingEmbedder, MemoryIndex, OverlapReranker, Script, ScriptedGenerator
from processors.guardrails.input_guard import InputGuard
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.stream_guard import REDACTED
from processors.prompts.registry import PromptRegistryState
from processors.query.processor import QueryConfig, QueryProcessor
from processors.query.prompting import TemplatePrompts
from processors.query.router import FeatureRouter, RoutedChooser, RouterConfig
from schemas.events import AnswerDone, AnswerError, Passage, QueryOptions, QueryRequest, ReplyTo, TokenDelta

TENANT = "acme"
MANUAL = [
    Passage(chunk_id="hr#0", doc_id="hr.md", score=0.0, title="HR manual",
            text="The employee record lists the SSN, the card on file and the contact e-mail of each employee."),
]  # fmt: skip
QUESTION = "What does the employee record list?"
# The model says an SSN, a card in fullwidth digits and an e-mail; each test cuts the stream inside one of them.
PIECES = ["The ", "employee ", "record ", "lists ", "her ", "SSN ", "078-", "05-", "1120", ", card ", "４１１１ ",
          "１１１１ ", "１１１１ ", "１１１１", " and ", "jane.", "doe@", "example", ".com", "."]  # fmt: skip
SECRETS = ["078-05", "05-1120", "4111", "１１１１", "jane.doe", "doe@", "example.com"]


@pytest.fixture(scope="module")
async def guard() -> InputGuard:
    guard = InputGuard()
    await guard.warm_up()
    return guard


async def _processor(guard: InputGuard, delay_s: float = 0.0) -> QueryProcessor:
    embedder = HashingEmbedder()
    index = MemoryIndex(embedder)
    await index.add(TENANT, MANUAL)
    registry = PromptRegistryState()
    registry.install_builtins()
    return QueryProcessor(
        guard=guard,
        policy_for=lambda tenant: GuardPolicy(),
        embedder=embedder,
        search=index,
        reranker=OverlapReranker(),
        prompts=TemplatePrompts(registry.resolve),
        chooser=RoutedChooser(FeatureRouter(RouterConfig())),
        generator=ScriptedGenerator({"llm_small": Script(PIECES, delay_s), "llm_large": Script(PIECES, delay_s)}),
        cache=None,
        config=QueryConfig(min_relevance=0.0, delta_max_delay_s=0.0, delta_max_chars=1),
    )


async def _run(guard: InputGuard, *, max_tokens: int, cancel_after_pieces: int | None = None) -> list[object]:
    processor = await _processor(guard)
    request = QueryRequest(request_id="r1", tenant=TENANT, question=QUESTION, reply_to=ReplyTo(topic="replies"),
                           options=QueryOptions(max_tokens=max_tokens))  # fmt: skip
    prepared = await processor.prepare(request)
    assert prepared.prompted is not None, prepared.final
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return cancel_after_pieces is not None and calls >= cancel_after_pieces

    return [event async for event in processor.answer(prepared.prompted, is_cancelled=cancelled)]


def _assert_no_fragment(events: list[object]) -> AnswerDone:
    streamed = "".join(e.text for e in events if isinstance(e, TokenDelta))
    done = events[-1]
    assert isinstance(done, AnswerDone)
    for text in (streamed, done.text):
        for secret in SECRETS:
            assert secret not in text, (secret, text)
        assert not re.search(r"\d{3}", text.replace("４", "").replace("１", "")), text
    assert streamed == done.text
    return done


@pytest.mark.parametrize(
    ("cut_after", "entity"),
    [(7, "US_SSN"), (8, "US_SSN"), (12, "CREDIT_CARD"), (13, "CREDIT_CARD"), (17, "EMAIL_ADDRESS")],
)
async def test_max_tokens_cut_inside_an_entity_emits_no_fragment(
    guard: InputGuard, cut_after: int, entity: str
) -> None:
    events = await _run(guard, max_tokens=cut_after)
    done = _assert_no_fragment(events)
    assert done.finish_reason == "length"
    # the cut-off entity is redacted, or masked as whatever complete entity its start already is ("4111 1111")
    assert done.text.rstrip().endswith(">"), done.text
    assert done.output_verdict is not None and done.output_verdict.action == "modify"


@pytest.mark.parametrize("cancel_after", [7, 8, 13, 17])
async def test_cancel_inside_an_entity_emits_no_fragment(guard: InputGuard, cancel_after: int) -> None:
    events = await _run(guard, max_tokens=256, cancel_after_pieces=cancel_after)
    done = _assert_no_fragment(events)
    assert done.finish_reason == "cancelled"
    assert done.text.rstrip().endswith(">"), done.text


async def test_complete_stream_masks_every_entity_including_fullwidth_card(guard: InputGuard) -> None:
    events = await _run(guard, max_tokens=256)
    done = _assert_no_fragment(events)
    assert done.finish_reason == "stop"
    assert "<US_SSN>" in done.text and "<CREDIT_CARD>" in done.text and "<EMAIL_ADDRESS>" in done.text
    assert REDACTED not in done.text


async def test_a_deadline_passing_mid_stream_ends_in_timeout_and_emits_no_fragment(guard: InputGuard) -> None:
    processor = await _processor(guard, delay_s=0.1)  # a piece every 0.1 s: the deadline falls about piece 7 ("078-")
    request = QueryRequest(request_id="r1", tenant=TENANT, question=QUESTION, reply_to=ReplyTo(topic="replies"))
    prepared = await processor.prepare(request)
    assert prepared.prompted is not None, prepared.final
    late = msgspec.structs.replace(request, deadline=time.time() + 0.75)
    events = [e async for e in processor.answer(msgspec.structs.replace(prepared.prompted, request=late))]
    error = events[-1]
    assert isinstance(error, AnswerError)
    assert (error.code, error.stage, error.retryable) == ("timeout", "generate", True)
    assert time.time() - late.deadline < 0.5  # told when the deadline passed, not when the model would have ended
    assert not any(isinstance(e, AnswerDone) for e in events)
    streamed = "".join(e.text for e in events if isinstance(e, TokenDelta))
    assert streamed.startswith("The employee")
    for secret in SECRETS:
        assert secret not in streamed, (secret, streamed)
