"""PII recognizers: validators reject near-misses, Faker values in many formats are found and masked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import pytest

from processors.guardrails.pii import (
    EMAIL,
    URL,
    PiiEntity,
    find_pattern_entities,
    get_pii_analyzer,
    iban_ok,
    luhn_ok,
    mask_patterns,
    placeholder,
    ssn_ok,
    suppress_urls_in_emails,
)


def _luhn_digit(partial: str) -> str:
    for d in "0123456789":
        if luhn_ok(partial + d):
            return d
    raise AssertionError("no check digit")


def test_luhn_accepts_check_digit_and_rejects_every_single_digit_change() -> None:
    body = "453201511283036"
    number = body + _luhn_digit(body)
    assert luhn_ok(number)
    for i in range(len(number)):
        for d in "0123456789":
            if d != number[i]:
                assert not luhn_ok(number[:i] + d + number[i + 1 :])


@pytest.mark.parametrize(
    ("area", "group", "serial", "ok"),
    [("123", "45", "6780", True), ("000", "45", "6780", False), ("666", "45", "6780", False),
     ("912", "45", "6780", False), ("123", "00", "6780", False), ("123", "45", "0000", False)],
)  # fmt: skip
def test_ssn_rules(area: str, group: str, serial: str, ok: bool) -> None:
    assert ssn_ok(area, group, serial) is ok


def test_iban_mod97_detects_transposition() -> None:
    iban = "DE89370400440532013000"  # the ISO example
    assert iban_ok(iban)
    for i in range(4, len(iban) - 1):
        if iban[i] != iban[i + 1]:
            swapped = iban[:i] + iban[i + 1] + iban[i] + iban[i + 2 :]
            assert not iban_ok(swapped), i


def test_invalid_lookalikes_are_not_masked() -> None:
    body = "411111111111111"
    bad_card = body + str((int(_luhn_digit(body)) + 1) % 10)
    text = f"Card {bad_card}, SSN 666-12-3456, IBAN DE89370400440532013001, IP 256.1.1.1, date 2024-03-15."
    assert find_pattern_entities(text) == []


def test_faker_values_in_sentences_are_found_with_the_right_type(
    pii_values: Callable[[int, int], list[tuple[str, str]]],
) -> None:
    misses = []
    for etype, value in pii_values(600, 7):
        text = f"Details: {value}. Thanks"
        start = text.index(value)
        found = find_pattern_entities(text)
        if not any(e.entity_type == etype and e.start <= start and e.end >= start + len(value) for e in found):
            misses.append(etype)
    assert len(misses) <= 6, misses  # >= 99% recall on 600 values


def test_mask_uses_typed_placeholders_and_keeps_other_text() -> None:
    text = "Mail ann.lee@example.org or call +44 20 7946 0958, card 4111 1111 1111 1111."
    result = mask_patterns(text)
    assert "ann.lee" not in result.text and "7946" not in result.text and "1111" not in result.text
    assert placeholder("EMAIL_ADDRESS") in result.text
    assert placeholder("PHONE_NUMBER") in result.text
    assert placeholder("CREDIT_CARD") in result.text
    assert result.text.startswith("Mail ") and result.text.endswith(".")
    # entity records carry types, spans and the reason (recognizer + keyword or shape): nothing raw to leak into logs
    names = {"entity_type", "start", "end", "score", "recognizer", "context"}
    assert all({f.name for f in fields(e)} == names for e in result.entities)
    for e in result.entities:
        assert text[e.start : e.end] not in repr(e)
    assert {e.recognizer for e in result.entities} == {"email", "phone", "card_luhn"}


def test_url_inside_email_is_suppressed() -> None:
    found = [PiiEntity(EMAIL, 5, 25, 1.0), PiiEntity(URL, 14, 25, 0.5), PiiEntity(URL, 40, 52, 0.5)]
    kept = suppress_urls_in_emails(found)
    assert [(e.entity_type, e.start) for e in kept] == [(EMAIL, 5), (URL, 40)]


def test_presidio_engine_with_offline_spacy_model_finds_email_not_url_and_person_on_request() -> None:
    analyzer = get_pii_analyzer()
    text = "Ask John Smith at john.smith@example.com or see https://docs.python.org"
    found = analyzer.analyze(text, ["EMAIL_ADDRESS", "URL", "PERSON"])
    types = [(e.entity_type, text[e.start : e.end]) for e in found]
    assert ("EMAIL_ADDRESS", "john.smith@example.com") in types
    assert not any(t == "URL" and "example.com" in v for t, v in types)
    assert any(t == "PERSON" for t, _ in types)
    masked = analyzer.mask("call 212-555-0134 now", ["PHONE_NUMBER"])
    assert masked.text == "call <PHONE_NUMBER> now"
