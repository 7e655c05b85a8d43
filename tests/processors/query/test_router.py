"""Model routing: the seed heuristic, the feature router, where they differ and why, and per-tenant overrides."""

from __future__ import annotations

import html
import re
from pathlib import Path

import msgspec
import pytest

from processors.query.router import (
    FeatureRouter,
    FeatureWeights,
    HeuristicRouter,
    RouterConfig,
    count_tokens,
    parse_router_overrides,
)
from schemas.events import Passage

FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")
FILLER = (
    "I have been learning Python for a couple of weeks from the official tutorial and some videos, "
    "and my team lead asked me to look into this for our internal scripts, so "
)


def faq_questions() -> list[str]:
    """The question headings of the Python FAQ shipped with Debian's python3.11-doc."""
    out = []
    for page in sorted(FAQ_DIR.glob("*.html")):
        for raw in re.findall(r'<h[2-4][^>]*>((?:(?!</h[2-4]>).)*?)<a class="headerlink"', page.read_text(), re.S):
            heading = html.unescape(re.sub(r"<.*?>", "", raw)).strip()
            if heading.endswith("?"):
                out.append(heading)
    return out


def _passages(doc_scores: list[tuple[str, float]]) -> list[Passage]:
    return [
        Passage(chunk_id=f"{doc}#{i}", doc_id=doc, text=f"text {i}", score=score)
        for i, (doc, score) in enumerate(doc_scores)
    ]


ONE_DOC = _passages([("a", 0.9), ("a", 0.85), ("b", 0.3), ("c", 0.2)])
SPREAD = _passages([("a", 0.9), ("b", 0.85), ("c", 0.8), ("d", 0.75)])
WEAK = _passages([("a", 0.15), ("b", 0.1)])


# --- overrides and configuration ---------------------------------------------------------------------------------


def test_parse_overrides() -> None:
    assert parse_router_overrides("") == {}
    assert parse_router_overrides(" acme:large , free:SMALL,, *:small") == {
        "acme": "large",
        "free": "small",
        "*": "small",
    }
    assert parse_router_overrides("org:team:large") == {"org:team": "large"}


@pytest.mark.parametrize("text", ["acme", "acme:medium", ":large", "acme:large,acme:small"])
def test_bad_overrides_fail_with_the_offending_item(text: str) -> None:
    with pytest.raises(ValueError, match="router_overrides"):
        parse_router_overrides(text)


@pytest.mark.parametrize("router_type", [HeuristicRouter, FeatureRouter])
def test_a_tenant_override_pins_the_tier_whatever_the_score(router_type: type[HeuristicRouter]) -> None:
    config = RouterConfig(small_model="s", large_model="L", overrides=parse_router_overrides("free:small,acme:large"))
    router = router_type(config)
    hard = "Compare asyncio and threading and explain why one is faster for network I/O?"
    easy = "What is Python?"
    assert router.route(hard, SPREAD, "someone").tier == "large"
    assert router.route(easy, ONE_DOC, "someone").tier == "small"
    pinned_small = router.route(hard, SPREAD, "free")
    assert (pinned_small.tier, pinned_small.model) == ("small", "s")
    assert any("override free:small" in reason for reason in pinned_small.reasons)
    assert pinned_small.score == router.route(hard, SPREAD, "someone").score  # still scored, for the record
    assert router.route(easy, ONE_DOC, "acme").model == "L"


def test_a_wildcard_override_applies_to_unlisted_tenants_only() -> None:
    router = FeatureRouter(RouterConfig(overrides=parse_router_overrides("*:small,acme:large")))
    assert router.route("What is the difference between a list and a tuple?", [], "x").tier == "small"
    assert router.route("What is Python?", [], "acme").tier == "large"


# --- the heuristic (seed) ----------------------------------------------------------------------------------------


def test_heuristic_routes_by_keyword_or_length_only() -> None:
    router = HeuristicRouter()
    assert router.route("Can you compare lists and tuples?", [], "t").tier == "large"
    assert router.route("What is a list?", WEAK, "t").tier == "small"  # never looks at the evidence
    long_question = " ".join(["word"] * (HeuristicRouter.MAX_SMALL_WORDS + 1))
    assert router.route(long_question, [], "t").tier == "large"
    assert router.route(" ".join(["word"] * HeuristicRouter.MAX_SMALL_WORDS), [], "t").tier == "small"


# --- the feature router ------------------------------------------------------------------------------------------


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("How do I sort a dict by value?") == 9
    assert count_tokens("") == 0


def test_each_evidence_feature_adds_its_weight() -> None:
    router, weights = FeatureRouter(), FeatureWeights()
    question = "How do I sort a dict by value?"
    base = router.route(question, ONE_DOC, "t").score
    assert router.route(question, SPREAD, "t").score == pytest.approx(base + weights.spread, abs=1e-3)
    assert router.route(question, WEAK, "t").score == pytest.approx(base + weights.weak_retrieval, abs=1e-3)


def test_one_strong_cue_suffices_a_weak_cue_needs_company() -> None:
    router = FeatureRouter()
    assert router.route("What is the difference between a list and a tuple?", ONE_DOC, "t").tier == "large"
    why = "Why are Python strings immutable?"
    assert router.route(why, ONE_DOC, "t").tier == "small"
    assert router.route(why, SPREAD, "t").tier == "large"  # the rationale is spread over several documents
    error = "How do I fix ModuleNotFoundError: No module named 'yaml'?"
    assert router.route(error, ONE_DOC, "t").tier == "small"
    assert router.route(error.replace("How do I fix", "Why do I get"), ONE_DOC, "t").tier == "large"


def test_a_pasted_traceback_goes_large_although_no_seed_keyword_is_present() -> None:
    question = (
        'My script fails with\nTraceback (most recent call last):\n  File "app.py", line 3, in <module>\n'
        "    print(d['k'])\nKeyError: 'k'\nwhat does it mean?"
    )
    assert HeuristicRouter().route(question, ONE_DOC, "t").tier == "small"
    decision = FeatureRouter().route(question, ONE_DOC, "t")
    assert decision.tier == "large"
    assert any("error/code" in reason for reason in decision.reasons)


def test_multi_part_questions_score_higher_than_their_parts() -> None:
    router = FeatureRouter()
    first, second = "How do I read a CSV file?", "how do I write only some of its columns to a new one?"
    combined = router.route(f"{first} Then {second}", ONE_DOC, "t").score
    assert combined > router.route(first, ONE_DOC, "t").score + FeatureWeights().parts / 2 - 1e-9


def test_length_alone_does_not_buy_the_large_model() -> None:
    question = FILLER + "how do I get the number of items in a list?"
    assert len(question.split()) > HeuristicRouter.MAX_SMALL_WORDS
    assert HeuristicRouter().route(question, ONE_DOC, "t").tier == "large"
    decision = FeatureRouter().route(question, ONE_DOC, "t")
    assert decision.tier == "small"
    assert decision.score > 0  # length still counted, visibly
    assert any("tokens" in reason for reason in decision.reasons)


def test_decisions_are_explained_and_serializable() -> None:
    decision = FeatureRouter().route("Compare list.sort() and sorted(); why does sort return None?", SPREAD, "t")
    assert decision.tier == "large"
    assert len(decision.reasons) >= 3
    assert 0 < decision.score <= 1
    assert msgspec.json.decode(msgspec.json.encode(decision), type=type(decision)) == decision


@pytest.mark.usefixtures("python_docs")
def test_python_faq_questions_mostly_stay_small_and_comparisons_agree() -> None:
    questions = faq_questions()
    assert len(questions) > 100
    heuristic, feature = HeuristicRouter(), FeatureRouter()
    large = [q for q in questions if feature.route(q, ONE_DOC, "t").tier == "large"]
    # FAQ headings are short, single questions answered by one section: the large model should be the exception.
    assert len(large) <= 0.1 * len(questions), large
    for question in questions:
        if re.search(r"\b(difference|compare)\b", question, re.I):
            assert heuristic.route(question, ONE_DOC, "t").tier == feature.route(question, ONE_DOC, "t").tier
