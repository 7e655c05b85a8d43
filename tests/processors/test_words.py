"""The BM25 keyword query: function words go, everything that names something stays."""

from __future__ import annotations

from processors.words import keyword_query


def test_keyword_query_drops_function_words_and_keeps_identifiers_and_numbers() -> None:
    assert keyword_query("What protocol version does pickle use by default in 3.11?") == (
        "protocol version pickle default 3 11"
    )
    assert keyword_query("How do I call dict.get with a default?") == "call dict get default"


def test_keyword_query_ignores_case_when_dropping_function_words() -> None:
    assert keyword_query("WHY Is THE sky BLUE") == "sky BLUE"


def test_a_question_of_function_words_only_is_kept_whole_so_it_still_matches() -> None:
    assert keyword_query("How is it?") == "How is it?"
    assert keyword_query("") == ""
