"""Evaluation metrics, pure functions: no I/O, no models (embeddings come in as vectors), so each is unit-tested.

Retrieval relevance is judged per retrieved chunk against the golden ``relevant`` items: a chunk is relevant to an
item when it is in the same document (``doc_id`` or ``source_uri``) and its character span overlaps the item's span
(or, with no span, anywhere in the document; with no document, when it contains the item's text snippet).
Ranking metrics count each relevant *item* once: a span cut into three chunks is found by the first of them, so
recall and nDCG stay in [0, 1] without knowing how the corpus was chunked.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from processors.citations import cited_numbers, is_refusal_text, strip_citations
from processors.evaluation.golden import Relevant
from processors.guardrails.stream_guard import check_groundedness
from schemas.events import Citation, Passage

_TOKEN = re.compile(r"\w+", re.UNICODE)
_ARTICLES = {"a", "an", "the"}
_SPACE = re.compile(r"\s+")


# --- retrieval -------------------------------------------------------------------------------------------------


def _norm_space(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def chunk_matches(passage: Passage, item: Relevant) -> bool:
    """Whether one retrieved chunk is relevant to one golden item (see the module docstring)."""
    same_doc = bool(
        (item.doc_id and item.doc_id == passage.doc_id)
        or (item.source_uri and passage.source_uri and item.source_uri == passage.source_uri)
    )
    if item.doc_id or item.source_uri:
        if not same_doc:
            return False
        if item.char_start is None or item.char_end is None:
            return True
        if passage.char_end > passage.char_start:
            return passage.char_start < item.char_end and item.char_start < passage.char_end
        # a chunk without offsets: fall back to the snippet, else the document is all we know
        return not item.text_snippet or _norm_space(item.text_snippet)[:80] in _norm_space(passage.text)
    if item.text_snippet:
        return _norm_space(item.text_snippet)[:80] in _norm_space(passage.text)
    return False


def match_ranks(ranked: Sequence[Passage], relevant: Sequence[Relevant]) -> list[set[int]]:
    """For each rank, the indexes of the golden items that chunk is relevant to."""
    return [{j for j, item in enumerate(relevant) if chunk_matches(p, item)} for p in ranked]


def recall_at_k(matches: Sequence[set[int]], n_relevant: int, k: int) -> float | None:
    """Share of the golden items found in the top ``k``; None when nothing is known to be relevant."""
    if n_relevant <= 0:
        return None
    found: set[int] = set().union(*matches[:k]) if matches[:k] else set()
    return len(found) / n_relevant


def reciprocal_rank(matches: Sequence[set[int]], k: int | None = None) -> float | None:
    """1/rank of the first relevant chunk (0 if none in the top ``k``); average over cases for MRR."""
    for rank, found in enumerate(matches[:k] if k is not None else matches, start=1):
        if found:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(matches: Sequence[set[int]], n_relevant: int, k: int) -> float | None:
    """Binary-gain nDCG: a chunk gains 1 when it finds a golden item no higher-ranked chunk found.

    DCG = sum gain_i / log2(i + 1) over ranks i = 1..k; the ideal ranking finds min(n_relevant, k) items at the
    top ranks.
    """
    if n_relevant <= 0:
        return None
    seen: set[int] = set()
    dcg = 0.0
    for rank, found in enumerate(matches[:k], start=1):
        new = found - seen
        if new:
            dcg += 1.0 / math.log2(rank + 1)
            seen |= new
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(n_relevant, k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class RetrievalScores:
    recall_at_5: float | None
    recall_at_20: float | None
    mrr: float | None
    ndcg_at_10: float | None


def retrieval_scores(ranked: Sequence[Passage], relevant: Sequence[Relevant]) -> RetrievalScores:
    if not relevant:
        return RetrievalScores(None, None, None, None)
    matches = match_ranks(ranked, relevant)
    n = len(relevant)
    return RetrievalScores(
        recall_at_5=recall_at_k(matches, n, 5),
        recall_at_20=recall_at_k(matches, n, 20),
        mrr=reciprocal_rank(matches, 20),
        ndcg_at_10=ndcg_at_k(matches, n, 10),
    )


# --- answers ---------------------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """SQuAD-style normalisation: lower case, word characters, no articles."""
    return [t for t in _TOKEN.findall(strip_citations(text).lower()) if t not in _ARTICLES]


def token_f1(prediction: str, reference: str) -> float | None:
    """Harmonic mean of token precision and recall (bag of words, counts clipped); None with no reference."""
    ref = tokens(reference)
    if not ref:
        return None
    pred = tokens(prediction)
    if not pred:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity; 0.0 when either vector is zero (an empty text embeds to nothing useful)."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.dot(x, y) / denom) if denom > 0 else 0.0


def mean_cosine(query: npt.ArrayLike, others: Sequence[npt.ArrayLike]) -> float | None:
    """Context relevance: mean cosine of the question against each retrieved passage; None with no passages."""
    if not others:
        return None
    return sum(cosine(query, other) for other in others) / len(others)


def groundedness(
    answer: str, cited: Mapping[int, str], retrieved: Sequence[str], *, threshold: float = 0.5
) -> float | None:
    """Share of the answer's checkable sentences supported by the passages (the output guard's word-overlap test).

    ``cited`` maps citation numbers to passage texts, so a sentence with ``[n]`` is checked against passage n; a
    sentence without a valid marker is checked against every cited and retrieved passage. None when no sentence
    has enough content words to check.
    """
    width = max(cited, default=0)
    passages = [cited.get(n, "") for n in range(1, width + 1)] + list(retrieved)
    if not passages:
        return 0.0 if strip_citations(answer) else None
    checks = check_groundedness(answer, passages, threshold)
    if not checks:
        return None
    return sum(1 for c in checks if c.grounded) / len(checks)


@dataclass(frozen=True)
class CitationCheck:
    valid: bool
    markers: int  # distinct [n] numbers in the text
    unknown: list[int] = field(default_factory=list)  # [n] with no returned citation
    not_retrieved: list[int] = field(default_factory=list)  # citations whose chunk was not retrieved


def citation_validity(text: str, citations: Sequence[Citation], retrieved_ids: Iterable[str]) -> CitationCheck:
    """Every [n] in the answer must name a returned citation, and that citation's chunk must have been retrieved."""
    by_number = {c.number: c for c in citations}
    retrieved = set(retrieved_ids)
    numbers = sorted(cited_numbers(text))
    unknown = [n for n in numbers if n not in by_number]
    not_retrieved = [n for n in numbers if n in by_number and by_number[n].chunk_id not in retrieved]
    return CitationCheck(not unknown and not not_retrieved, len(numbers), unknown, not_retrieved)


def is_refusal(finish_reason: str | None, text: str, error_code: str | None = None) -> bool:
    """The pipeline declined: a refusal finish, an input-guard block, or the refusal sentence itself."""
    if finish_reason in ("refused", "blocked") or error_code == "blocked":
        return True
    return is_refusal_text(text)


@dataclass(frozen=True)
class PassRule:
    groundedness: float = 0.5
    similarity: float = 0.5


def case_passes(
    *,
    expect_refusal: bool,
    refused: bool,
    error: bool,
    grounded: float | None,
    similarity: float | None,
    citations_valid: bool,
    rule: PassRule = PassRule(),
) -> bool:
    """Refusal expected: passes iff refused. Otherwise answered, grounded, close to the reference, valid citations.

    A metric that cannot be computed (no checkable sentence, no reference answer) does not fail the case.
    """
    if error:
        return False
    if expect_refusal:
        return refused
    if refused or not citations_valid:
        return False
    if grounded is not None and grounded < rule.groundedness:
        return False
    return similarity is None or similarity >= rule.similarity


# --- aggregation -----------------------------------------------------------------------------------------------


def mean_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]; None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def decode_tokens_per_s(completion_tokens: int, timings_ms: Mapping[str, float]) -> float | None:
    """A stream's decode speed as the worker measured it (``AnswerDone.timings_ms``): the tokens after the first
    over the time from the first token (``ttft_model``) to the end of generation (``generate``). None when no
    model ran (a refusal, a cached answer) or too little was generated to time."""
    first, end = timings_ms.get("ttft_model"), timings_ms.get("generate")
    if first is None or end is None or completion_tokens < 2 or end <= first:
        return None
    return (completion_tokens - 1) / ((end - first) / 1000.0)


def threshold_accuracy(positive: Sequence[float], negative: Sequence[float], threshold: float) -> float | None:
    """Share decided right by "answer iff score >= threshold": positives should pass, negatives should not."""
    total = len(positive) + len(negative)
    if total == 0:
        return None
    return (sum(1 for p in positive if p >= threshold) + sum(1 for n in negative if n < threshold)) / total


def best_threshold(positive: Sequence[float], negative: Sequence[float]) -> tuple[float, float] | None:
    """The threshold that decides the most cases right, and its accuracy.

    Any threshold between two neighbouring observed scores decides the same; the midpoint of the best such gap is
    returned, so the margin to both sides is as large as this data allows. Ties go to the lower threshold (fewer
    false refusals).
    """
    scores = sorted(set(positive) | set(negative))
    if not scores:
        return None
    best: tuple[float, float] | None = None
    for i, cut in enumerate(scores):
        accuracy = threshold_accuracy(positive, negative, cut)
        if accuracy is not None and (best is None or accuracy > best[1]):
            below = scores[i - 1] if i > 0 else cut
            best = ((below + cut) / 2, accuracy)
    return best
