"""The extractive answer picks the sentence that answers, not the one that is merely on topic, and refuses otherwise."""

from __future__ import annotations

import numpy as np

from processors.adapters.memory import HashingEmbedder
from processors.citations import REFUSAL, citations_for, cited_numbers
from processors.guardrails.stream_guard import split_sentences
from processors.query.extractive import (
    ExtractiveConfig,
    candidate_sentences,
    compose_answer,
    extractive_answer,
    score_candidates,
    terms,
)
from schemas.events import Passage


def passage(n: int, text: str, score: float = 0.8) -> Passage:
    return Passage(chunk_id=f"c{n}", doc_id=f"library/doc{n}.html", text=text, score=score)


TEXTWRAP = [
    passage(
        1,
        "The textwrap module provides some convenience functions, as well as TextWrapper, the class that does all "
        "the work. If you're just wrapping or filling one or two text strings, the convenience functions should be "
        "good enough; otherwise, you should use an instance of TextWrapper for efficiency.",
    ),
    passage(
        2,
        "textwrap.fill(text, width=70, *, initial_indent='', subsequent_indent='', expand_tabs=True)\n"
        "Wraps the single paragraph in text, and returns a single string containing the wrapped paragraph.",
        score=0.75,
    ),
]


async def answer(question: str, passages: list[Passage], config: ExtractiveConfig | None = None) -> str:
    """The answer with the test embedder (word hashing), whose scores are not on MiniLM's scale: tests of the choice
    of sentence set ``min_score`` to 0."""
    embedder = HashingEmbedder()
    [vector] = (await embedder.embed([question])).tolist()
    return await extractive_answer(question, vector, passages, embedder, config or ExtractiveConfig())


async def test_a_question_after_a_default_quotes_the_signature_that_states_it() -> None:
    text = await answer("What's the default line width textwrap uses?", TEXTWRAP, ExtractiveConfig(min_score=0.0))
    assert "width=70" in text and text.endswith("[2]")


async def test_a_version_line_is_quoted_for_a_since_when_question_through_its_signature() -> None:
    passages = [
        passage(
            1,
            "math.isqrt(n)\nReturn the integer square root of the nonnegative integer n. This is the floor of the "
            "exact square root of n.\nNew in version 3.8.",
        ),
        passage(2, "math.sqrt(x)\nReturn the square root of x. The result is a float."),
    ]
    text = await answer("math.isqrt available since which version?", passages, ExtractiveConfig(min_score=0.0))
    assert "New in version 3.8 [1]." in text.splitlines()


async def test_a_question_in_the_sources_is_never_quoted_as_the_answer() -> None:
    faq = [passage(1, "Why are Python strings immutable? There are several advantages. One is performance.")]
    assert [c.text for c in candidate_sentences(faq)] == ["There are several advantages.", "One is performance."]


async def test_sources_that_do_not_answer_give_the_refusal() -> None:
    off_topic = [passage(1, "To reset the frobnicator, hold the blue button until the lamp blinks twice.")]
    assert await answer("Who won the football world cup in 2022?", off_topic) == REFUSAL


async def test_a_two_part_question_quotes_both_sources_each_with_a_valid_citation() -> None:
    passages = [
        passage(1, "The default is (', ', ': ') if indent is None and (',', ': ') otherwise."),
        passage(2, "If indent is a non-negative integer or string, JSON array elements are pretty-printed."),
    ]
    embedder = HashingEmbedder()
    question = "What separators does json.dumps use when indent is None versus when indent is set?"
    [vector] = (await embedder.embed([question])).tolist()
    candidates = candidate_sentences(passages)
    scores = score_candidates(
        question, vector, candidates, await embedder.embed([c.text for c in candidates]), [0.8, 0.8]
    )
    text = compose_answer(candidates, scores, ExtractiveConfig(min_score=0.0, also_ratio=0.0))
    assert text.index("[1]") < text.index("[2]")
    citations, invalid = citations_for(text, passages)
    assert [c.chunk_id for c in citations] == ["c1", "c2"] and not invalid


def test_identifiers_count_whole_and_by_their_parts() -> None:
    assert {"socket.create_connection", "create", "connection", "timeout"} <= terms(
        "What timeout does socket.create_connection use?"
    )


def test_each_quoted_sentence_carries_its_own_citation_as_the_claim_checker_splits_it() -> None:
    passages = [
        passage(1, "math.isclose(a, b, *, rel_tol=1e-09, abs_tol=0.0)"),
        passage(2, "The default tolerance is 1e-09, which assures that the two values are the same within 9 digits."),
    ]
    candidates = candidate_sentences(passages)
    text = compose_answer(candidates, np.array([0.9, 0.9], dtype=np.float32), ExtractiveConfig(min_score=0.0))
    sentences = split_sentences(text)
    assert [cited_numbers(s) for s in sentences] == [[1], [2]]
    assert sentences[1].endswith("within 9 digits [2].")


def test_a_since_when_question_gets_the_version_note_that_follows_the_best_sentence() -> None:
    passages = [
        passage(
            1,
            "A match statement takes an expression and compares its value to successive patterns. Only the first "
            "pattern that matches is executed. Patterns may bind names. New in version 3.10.",
        )
    ]
    candidates = candidate_sentences(passages)
    scores = np.array([0.9, 0.2, 0.1, 0.05], dtype=np.float32)  # the description is the best sentence
    config = ExtractiveConfig(min_score=0.0, also_ratio=1.0)
    asked = compose_answer(candidates, scores, config, asks_version=True)
    assert asked.splitlines() == [
        "A match statement takes an expression and compares its value to successive patterns [1].",
        "New in version 3.10 [1].",
    ]
    assert "3.10" not in compose_answer(candidates, scores, config)  # not asked: only the best sentence
