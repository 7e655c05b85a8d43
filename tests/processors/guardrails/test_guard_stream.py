"""Streaming output guard: no PII prefix is ever emitted, whatever the split; benign text flows with little delay."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from processors.guardrails.pii import mask_patterns
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.stream_guard import (
    PiiStreamMasker,
    StreamingOutputGuard,
    check_groundedness,
    support,
)
from processors.guardrails.toxicity import ToxicityScorer
from schemas.events import Passage

DIGIT_TYPES = {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"}


def _splits(text: str, rnd: random.Random, max_piece: int) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        k = rnd.randint(1, max_piece)
        pieces.append(text[i : i + k])
        i += k
    return pieces


def _assert_no_prefix(emitted: str, etype: str, value: str) -> None:
    if etype in DIGIT_TYPES:
        for k in range(4, len(value) + 1):
            assert value[:k] not in emitted, f"{etype} prefix of length {k} leaked"
    else:
        assert value not in emitted
        local = value.split("@", 1)[0]
        assert f"{local}@" not in emitted


@pytest.mark.parametrize("mode", ["char", "random"])
def test_pii_split_across_pieces_never_leaks_even_partly(
    mode: str, pii_values: Callable[[int, int], list[tuple[str, str]]]
) -> None:
    rnd = random.Random(1234)
    # bare 8-9 digit phone numbers are masked only with a context word (documented); not in this sentence
    values = [(t, v) for t, v in pii_values(120, 99) if not (t == "PHONE_NUMBER" and v.isdigit() and len(v) < 10)]
    for etype, value in values:
        # words around the value carry no digits, so any 4-digit prefix seen would be the value's
        text = f"Sure, the customer record says {value} and nothing else matters here."
        masker = PiiStreamMasker()
        emitted = ""
        pieces = list(text) if mode == "char" else _splits(text, rnd, 7)
        for piece in pieces:
            emitted += masker.push(piece)
            _assert_no_prefix(emitted, etype, value)
        emitted += masker.finish()
        _assert_no_prefix(emitted, etype, value)
        assert f"<{etype}>" in emitted, (etype, emitted)
        assert emitted == mask_patterns(text).text


def test_many_entities_stream_equals_batch_masking_at_every_step(
    pii_values: Callable[[int, int], list[tuple[str, str]]],
) -> None:
    """The emitted text is always a prefix of the batch-masked text: nothing emitted is ever wrong."""
    rnd = random.Random(7)
    values = pii_values(300, 3)
    leaked = 0
    fillers = ["Version 3.11 shipped in 2023.", "Call it a day.", "Room 4B, floor 12.", "It costs $1,299.99."]
    for i in range(0, len(values), 3):
        parts = []
        for _, v in values[i : i + 3]:
            parts += [rnd.choice(fillers), f"Value: {v}."]
        text = " ".join(parts)
        expected = mask_patterns(text).text
        masker = PiiStreamMasker()
        emitted = ""
        for piece in _splits(text, rnd, 9):
            emitted += masker.push(piece)
            assert expected.startswith(emitted)
        emitted += masker.finish()
        assert emitted == expected
        leaked += sum(1 for _, v in values[i : i + 3] if v in emitted)
    assert leaked <= len(values) // 100, leaked  # bare 8-9 digit phones without context: see README


PROSE = (
    "Python's asyncio module provides an event loop, coroutines and tasks. You can run blocking work in a "
    "thread with asyncio.to_thread, which keeps the loop responsive! Is that clear? It usually is [1]."
)


def test_benign_text_passes_unchanged_and_holds_back_at_most_the_last_word() -> None:
    rnd = random.Random(5)
    for max_piece in (1, 3, 12):
        masker = PiiStreamMasker()
        emitted = ""
        for piece in _splits(PROSE, rnd, max_piece):
            emitted += masker.push(piece)
            consumed = PROSE[: len(emitted) + masker.held]
            held_text = consumed[len(emitted) :]
            # only the trailing word (no whitespace inside) may be held: it could still become an e-mail
            assert not re.search(r"\s", held_text), held_text
        emitted += masker.finish()
        assert emitted == PROSE


def test_digits_are_released_once_they_cannot_be_an_entity() -> None:
    masker = PiiStreamMasker()
    assert masker.push("In 2023 we") == "In 2023 "
    assert masker.held == 2  # "we" could still be an e-mail local part
    assert masker.push(" had 42 users") == "we had 42 "
    assert masker.finish() == "users"


def test_hold_back_is_bounded_for_long_digit_runs() -> None:
    masker = PiiStreamMasker()
    out = ""
    for ch in "0" * 200 + " done":
        out += masker.push(ch)
        # a digit run is also a possible e-mail local part (max 64 chars), then nothing can contain it any more
        assert masker.held <= 65
    assert masker.held == len("done")
    out += masker.finish()
    assert out == "0" * 200 + " done"


class _FixedTox(ToxicityScorer):
    """A scorer that flags one word, so the stream tests do not depend on the model's calibration."""

    def __init__(self, word: str) -> None:
        super().__init__(predictor=lambda texts: [1.0 if word in t.lower() else 0.0 for t in texts])


def _passages() -> list[Passage]:
    return [
        Passage(chunk_id="c1", doc_id="d1", score=0.9,
                text="The asyncio event loop runs coroutines and schedules callbacks on a single thread."),
        Passage(chunk_id="c2", doc_id="d2", score=0.8,
                text="Use asyncio.to_thread to run blocking functions in a worker thread without blocking."),
    ]  # fmt: skip


def test_output_guard_masks_checks_citations_and_groundedness() -> None:
    guard = StreamingOutputGuard(GuardPolicy(), _passages(), toxicity=_FixedTox("zzz"))
    answer = (
        "The event loop runs coroutines and schedules callbacks on a single thread [1]. "
        "Blocking functions run in a worker thread with asyncio.to_thread [2]. "
        "Penguins migrate across Antarctic glaciers every winter season [3]. "
        "Contact admin@example.com for help."
    )
    out = "".join(guard.push(p) for p in _splits(answer, random.Random(2), 5)) + guard.finish()
    report = guard.report()
    assert "admin@example.com" not in out and "<EMAIL_ADDRESS>" in out
    assert report.invalid_citations == [3]
    assert [s.index for s in report.ungrounded] == [2]
    assert report.verdict.action == "modify"
    assert any(r.startswith("invalid_citation:3") for r in report.verdict.reasons)


def test_refuse_policy_replaces_ungrounded_answer() -> None:
    policy = GuardPolicy(groundedness_action="refuse", refusal_text="No answer.")
    guard = StreamingOutputGuard(policy, _passages(), toxicity=_FixedTox("zzz"))
    sent = [guard.push(p) for p in ["Penguins migrate across ", "Antarctic glaciers every winter. ",
                                     "Glaciers carve fjords over millennia."]]  # fmt: skip
    assert sent == ["", "", ""]  # held whole in refuse mode
    assert guard.finish() == "No answer."
    assert guard.report().refused


def test_toxic_output_is_blocked_before_the_word_leaves() -> None:
    guard = StreamingOutputGuard(GuardPolicy(), _passages(), toxicity=_FixedTox("darn"))
    out = guard.push("The loop is fine. ") + guard.push("But you are a da") + guard.push("rn fool.")
    out += guard.finish()
    assert "darn" not in out and guard.blocked
    assert guard.report().verdict.action == "block"


def test_groundedness_scores_copied_high_and_unrelated_low() -> None:
    p = _passages()[0].text
    assert support("The asyncio event loop runs coroutines.", p) == 1.0
    assert support("Penguins migrate across Antarctic glaciers.", p) == 0.0
    checks = check_groundedness("The event loop schedules callbacks. Penguins migrate across glaciers.", [p], 0.5)
    assert [c.grounded for c in checks] == [True, False]


@pytest.mark.parametrize(
    "answer",
    [
        "Fraud alert: your card ending in 9921 was used at a fuel station. If this was not you, call the bank.",
        "Tu peux réinitialiser le routeur en maintenant le bouton pendant dix secondes.",
        "Kill the stuck child process first, then restart the daemon.",
    ],
)
def test_answer_whose_first_word_scores_high_is_not_blocked(answer: str) -> None:
    """Toxicity is judged on the whole sentence, never on a prefix ("Fraud" alone scores 0.67 with the word model)."""
    guard = StreamingOutputGuard(GuardPolicy(groundedness_action="off"))
    out = "".join(guard.push(piece) for piece in re.findall(r"\S+\s*", answer)) + guard.finish()
    assert not guard.blocked, guard.report().verdict
    assert out == answer


def test_toxic_sentence_is_blocked_whole_and_nothing_of_it_is_sent() -> None:
    guard = StreamingOutputGuard(GuardPolicy(groundedness_action="off"))
    first = "The router resets with the button. "
    sent = "".join(guard.push(w) for w in re.findall(r"\S+\s*", first + "Keep asking and I will break your jaw."))
    sent += guard.finish()
    assert guard.blocked and sent == first
    assert any(r.startswith("toxicity_blocked:rule:threat") for r in guard.report().verdict.reasons)


def test_sentence_hold_is_bounded_for_run_on_text() -> None:
    guard = StreamingOutputGuard(GuardPolicy(groundedness_action="off"), toxicity=_FixedTox("zzz"))
    out = ""
    for _ in range(100):
        out += guard.push("word, ")
    assert len(out) >= 400  # a sentence with no end mark is released clause by clause, not held to the end


def test_output_guard_masks_names_per_sentence_when_the_policy_asks() -> None:
    policy = GuardPolicy(mask_entities=["EMAIL_ADDRESS", "PERSON"], groundedness_action="off")
    guard = StreamingOutputGuard(policy, toxicity=_FixedTox("zzz"))
    text = "Dear Mr. Halvorsen, your replacement ships today. Write to help@example.org if it does not arrive."
    out = "".join(guard.push(w) for w in re.findall(r"\S+\s*", text)) + guard.finish()
    assert "Halvorsen" not in out and "<PERSON>" in out and "<EMAIL_ADDRESS>" in out
