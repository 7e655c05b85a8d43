"""The model-free claim checker: which details it compares, and that it does not cry wolf on a negation elsewhere."""

from __future__ import annotations

import pytest

from processors.claims.lexical import LexicalClaimChecker
from processors.claims.verdicts import check_sentences

CHECK = LexicalClaimChecker()
STRINGS = "Strings are immutable sequences of Unicode code points; methods return new strings."
TIMEOUT = "The connect timeout defaults to 42 seconds and can be changed with the timeout argument."


@pytest.mark.parametrize(
    ("sentence", "passage"),
    [
        ("Strings are mutable sequences of Unicode code points.", STRINGS),
        ("The connect timeout defaults to 7 seconds.", TIMEOUT),
        ("The connect timeout defaults to 42 milliseconds.", TIMEOUT),
        (
            "The walrus operator was added in Python 3.6.",
            "Assignment expressions (the walrus operator) are new in version 3.8.",
        ),
    ],
    ids=["antonym", "number", "unit", "version"],
)
def test_a_detail_the_passage_states_otherwise_is_a_contradiction(sentence: str, passage: str) -> None:
    assert CHECK.check(sentence, passage).label == "contradicted"


def test_a_negation_of_the_same_statement_is_reported_as_a_doubt_not_a_contradiction() -> None:
    verdict = CHECK.check(
        "The cache is not shared between worker processes.", "The cache is shared between worker processes."
    )
    assert verdict.label == "not_mentioned"
    assert verdict.reason.startswith("possibly contradicted: it negates")


def test_a_negation_about_something_else_in_the_passage_is_not_a_contradiction() -> None:
    passage = "The pool reuses worker processes. It does not restart a worker after each task unless maxtasks is set."
    verdict = CHECK.check("The pool reuses its worker processes between tasks.", passage)
    assert verdict.label == "supported", verdict.reason


def test_a_sentence_with_the_passages_details_is_supported() -> None:
    verdict = CHECK.check("By default the connect timeout is 42 seconds.", TIMEOUT)
    assert verdict.label == "supported", verdict.reason


def test_a_sentence_about_something_else_is_not_mentioned() -> None:
    assert CHECK.check("Tuples can be used as dictionary keys.", TIMEOUT).label == "not_mentioned"


def test_an_uncited_sentence_is_supported_when_any_source_supports_it() -> None:
    older = "Before version 3.8 the connect timeout defaulted to 7 seconds."
    [verdict] = check_sentences(["By default the connect timeout is 42 seconds."], [older, TIMEOUT], CHECK)
    assert (verdict.label, verdict.passage) == ("supported", 2)


def test_a_cited_source_that_contradicts_the_sentence_wins_over_support_elsewhere() -> None:
    [verdict] = check_sentences(["The connect timeout defaults to 7 seconds [2]."], ["x", TIMEOUT], CHECK)
    assert (verdict.label, verdict.passage) == ("contradicted", 2)


# The FAQ passage that sat third under the demo's question; it flagged a correct answer as contradicted (CI, stop 24).
EVAL_FAQ = (
    "the number is interpreted using Python's rules: a leading '0o' indicates octal, and '0x' indicates a hex number. "
    "Do not use the built-in function eval() if all you need is to convert strings to numbers. eval() also has the "
    "effect of interpreting numbers as Python expressions, so that e.g. eval('09') gives a syntax error because "
    "Python does not allow leading '0' in a decimal number (except '0')."
)


@pytest.mark.parametrize(
    "sentence",
    [
        "number = int('144')",
        "For example, to convert the string '144' to the number 144, you can use the following code:",
        "print(number)  # Output: 144",
    ],
    ids=["quoted-literal", "the-word-number", "code-comment"],
)
def test_a_number_that_is_a_literal_or_just_a_number_is_not_contradicted_by_another_literal(sentence: str) -> None:
    assert CHECK.check(sentence, EVAL_FAQ).label != "contradicted"


def test_a_different_figure_in_a_named_slot_is_still_a_contradiction_when_the_word_number_is_beside_it() -> None:
    passage = "The maximum number of open files defaults to 1024 on most systems."
    assert CHECK.check("The maximum number of open files defaults to 4096.", passage).label == "contradicted"
