"""The extractive answer: the sentences of the sources that answer the question, quoted with their citation.

Small models paraphrase and get numbers, defaults and names wrong; a quoted sentence cannot. Choosing the sentence
is answer-sentence selection, and the question's embedding alone picks sentences that are *about* the topic ("the
precision determines the number of significant digits") rather than the one that *answers* it ("defaulting to 28
places"). So each candidate sentence is scored on four signals:

- meaning: cosine between the question and the sentence (the retrieval embedder; the question's vector is reused);
- words: the share of the question's rarer words the sentence contains, weighted by how rare each is among the
  candidate sentences (identifiers such as ``create_connection`` are split into their parts too);
- the kind of answer asked for: a question after a value ("how many", "default", "maximum", "which version")
  prefers a sentence that states one, above all ``name=value`` where the name is a word of the question, as in
  the signature ``textwrap.fill(text, width=70, ...)`` for "what's the default line width";
- the passage: the reranker's score of the passage the sentence comes from.

The best sentence is quoted with its ``[n]``, followed by the next sentence of its passage when that continues the
thought ("It ...", "This ..."), and by up to two further sentences that score nearly as well (a question with two
parts often has its answers in two places); one sentence per line, each with its own citation. When even the best
sentence scores below ``min_score``, nothing in the sources answers the question and the answer is the refusal: a
quoted answer that does not answer is worse than none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from processors.citations import REFUSAL
from processors.guardrails.stream_guard import STOPWORDS, split_sentences
from processors.protocols import Embedder
from schemas.events import Passage

_CONTINUES = re.compile(r"^(it|this|that|these|those|they|its|their|such|so|then|for example|however|but)\b", re.I)
_WORDS = re.compile(r"\w+")
# A question after the release something arrived in, and the documentation's note that states it.
_ASKS_VERSION = re.compile(
    r"\b(which|what)\s+(python\s+)?(version|release)\b|\bsince\b|\bintroduced\b|\badded\b|\bappear(ed)?\b|"
    r"\bshow(ed)?\s+up\b|\bwhen\s+(was|were|did)\b|\bhow\s+long\s+has\b",
    re.IGNORECASE,
)
_VERSION_NOTE = re.compile(r"\b(new|changed|added)\s+in\s+(python\s+)?version\s+\d", re.IGNORECASE)
_CLOSING = re.compile(r"[.!:]+[\"')\]\u201d\u2019]*$")
_TERM = re.compile(r"[A-Za-z_][\w.]*\w|\w+")
# Words every question has that say nothing about which sentence answers it.
_QUESTION_WORDS = frozenset(
    """what whats which who how many much does do did is are can could should would will there get give tell
    happen happens mean means way ways python default value set sets setting""".split()  # noqa: SIM905
)
# A question that asks for a value: a number, a limit, a default, a size, a version.
_WANTS_VALUE = re.compile(
    r"\b(how\s+(many|much|big|large|long|old|often|far|deep|wide|high|small)|default|defaults|maximum|minimum|max|min|"
    r"limit|limits|size|width|length|precision|version|versions|since\s+when|when\s+(was|were|did)|what\s+year|"
    r"biggest|largest|smallest|longest|highest|lowest|number\s+of|port|level|since|introduced|added|release|"
    r"appear|appeared)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])(?:\d+(?:[.,_]\d+)*(?:e-?\d+)?|0x[0-9a-f]+|\d+\*\*\d+)(?![\w])", re.IGNORECASE)
_NUMBER_WORD = re.compile(
    r"\b(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|sixteen|twenty|thirty|sixty|hundred|"
    r"thousand|million|billion)\b",
    re.IGNORECASE,
)
_ASSIGNMENT = re.compile(r"\b([A-Za-z_]\w*)\s*=\s*([^\s,)=]+)")
_DEFAULT = re.compile(r"\bdefault(s|ed|ing)?\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One quotable sentence: which source (1-based, as cited) and where in it."""

    source: int
    position: int
    text: str


@dataclass(frozen=True, slots=True)
class ExtractiveConfig:
    """Weights of the four signals and the thresholds, chosen on the development half of the Python docs golden set
    (``benchmarks/eval/golden/python_docs.md``); the held-out half is what ``benchmarks/eval/python_docs`` quotes.
    ``min_score`` is on the scale of the MiniLM embedder the pipeline uses: another embedder needs its own."""

    meaning: float = 1.0
    words: float = 0.6
    value: float = 0.5
    passage: float = 0.3
    min_score: float = 0.525  # below this the best sentence does not answer: refuse
    also_ratio: float = 0.85  # a further sentence is quoted when it scores at least this share of the best
    max_sentences: int = 3


DEFAULT_CONFIG = ExtractiveConfig()


def candidate_sentences(passages: Sequence[Passage]) -> list[Candidate]:
    """The sentences worth quoting: 3 to 80 words, ending like a statement or a signature (an example call such as
    ``>>> json.dumps(obj, indent=4)`` answers many a "how do I"); not bare headings or questions."""
    out = []
    for number, passage in enumerate(passages, start=1):
        for position, sentence in enumerate(split_sentences(passage.text)):
            words = len(_WORDS.findall(sentence))
            if 3 <= words <= 80 and sentence[-1:] in ".!:)" + '"':  # a question is never the answer
                out.append(Candidate(number, position, sentence))
    return out


def terms(text: str) -> set[str]:
    """Lower-cased content words; an identifier (``socket.create_connection``) counts whole and by its parts."""
    out: set[str] = set()
    for token in _TERM.findall(text.lower()):
        parts = {token, *re.split(r"[._]+", token)}
        out.update(p for p in parts if len(p) > 1 and p not in STOPWORDS and p not in _QUESTION_WORDS)
    return {_singular(t) for t in out}


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _word_scores(question: str, sentences: Sequence[str], heads: Sequence[str]) -> np.ndarray:
    """Per sentence: the IDF-weighted share of the question's words it contains (IDF among these sentences). A
    sentence that names nothing itself ("New in version 3.9.") also counts, at half weight, the words of the first
    sentence of its passage, which is usually the signature or heading it belongs to."""
    wanted = terms(question)
    own = [terms(s) for s in sentences]
    inherited = [terms(h) for h in heads]
    if not wanted or not own:
        return np.zeros(len(own), dtype=np.float32)
    n = len(own)
    idf = {t: math.log((n + 1) / (0.5 + sum(1 for b in own if t in b))) + 1.0 for t in wanted}
    total = sum(idf.values())
    return np.array(
        [
            sum(idf[t] * (1.0 if t in mine else 0.5 if t in head else 0.0) for t in wanted) / total
            for mine, head in zip(own, inherited, strict=True)
        ],
        dtype=np.float32,
    )


def _value_score(question: str, question_terms: set[str], sentence: str) -> float:
    """How plainly the sentence states a value of what the question asks about (0 when it asks for no value)."""
    asked_numbers = set(_NUMBER.findall(question))
    score = 0.0
    for name, _value in _ASSIGNMENT.findall(sentence):
        if _singular(name.lower()) in question_terms or any(p in question_terms for p in name.lower().split("_")):
            score = 1.0  # width=70 for "line width"
            break
    numbers = [x for x in _NUMBER.findall(sentence) if x not in asked_numbers]
    if numbers or _NUMBER_WORD.search(sentence):
        score = max(score, 0.6)
    if _DEFAULT.search(question) and _DEFAULT.search(sentence):
        score = min(1.0, score + 0.4)
    return score


def score_candidates(
    question: str,
    question_vector: Sequence[float],
    candidates: Sequence[Candidate],
    vectors: np.ndarray,
    passage_scores: Sequence[float],
    config: ExtractiveConfig = DEFAULT_CONFIG,
) -> np.ndarray:
    """Each candidate's combined score (see the module docstring); ``vectors`` are the candidates' embeddings."""
    if not candidates:
        return np.zeros(0, dtype=np.float32)
    query = np.asarray(question_vector, dtype=np.float32)
    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(query)), 1e-9) + 1e-9)
    heads = {c.source: c.text for c in sorted(candidates, key=lambda c: c.position, reverse=True)}
    words = _word_scores(question, [c.text for c in candidates], [heads[c.source] for c in candidates])
    if _WANTS_VALUE.search(question):
        question_terms = terms(question)
        value = np.array([_value_score(question, question_terms, c.text) for c in candidates], dtype=np.float32)
    else:
        value = np.zeros(len(candidates), dtype=np.float32)
    top = max(passage_scores, default=0.0)
    passage = np.array(
        [passage_scores[c.source - 1] - top if c.source - 1 < len(passage_scores) else 0.0 for c in candidates],
        dtype=np.float32,
    )  # 0 for the best passage, negative for the others
    total = config.meaning * cosine + config.words * words + config.value * value + config.passage * passage
    return np.asarray(total, dtype=np.float32) / (config.meaning + config.words)


def compose_answer(
    candidates: Sequence[Candidate],
    scores: np.ndarray,
    config: ExtractiveConfig = DEFAULT_CONFIG,
    *,
    asks_version: bool = False,
) -> str:
    """The quoted answer from the scored candidates, or the refusal when the best does not reach ``min_score``.
    For a question after a release (``asks_version``), the version note that follows the best sentence in its passage
    ("New in version 3.8.") is quoted with it: the documentation states versions there, after the description."""
    if not candidates or float(np.max(scores)) < config.min_score:
        return REFUSAL
    order = [int(i) for i in np.argsort(-scores)]
    best = order[0]
    chosen = [best]
    later = sorted(
        (
            i
            for i, c in enumerate(candidates)
            if c.source == candidates[best].source and c.position > candidates[best].position
        ),
        key=lambda i: candidates[i].position,
    )
    if (
        later
        and candidates[later[0]].position == candidates[best].position + 1
        and _CONTINUES.match(candidates[later[0]].text)
    ):
        chosen.append(later[0])
    if asks_version and not _VERSION_NOTE.search(candidates[best].text):
        chosen += [i for i in later if _VERSION_NOTE.search(candidates[i].text) and i not in chosen][:1]
    for i in order[1:]:
        if len(chosen) >= config.max_sentences or float(scores[i]) < config.also_ratio * float(scores[best]):
            break
        if i not in chosen and candidates[i].text not in {candidates[j].text for j in chosen}:
            chosen.append(i)
    # In the order of the sources, one sentence per line, each with its own citation: a marker between two quotes
    # would read as the next one's.
    chosen.sort(key=lambda i: (candidates[i].source, candidates[i].position))
    return "\n".join(_cited(candidates[i].text, candidates[i].source) for i in chosen)


def _cited(sentence: str, source: int) -> str:
    """The sentence with ``[n]`` before its closing punctuation ("... by default [3]."), or after it when it ends
    otherwise (a signature's ")")."""
    end = _CLOSING.search(sentence)
    if end is None:
        return f"{sentence} [{source}]"
    return f"{sentence[: end.start()]} [{source}]{sentence[end.start() :]}"


async def _scored(
    question: str,
    question_vector: Sequence[float],
    passages: Sequence[Passage],
    embedder: Embedder,
    config: ExtractiveConfig,
) -> tuple[list[Candidate], np.ndarray]:
    candidates = candidate_sentences(passages)
    if not candidates or not question_vector:
        return [], np.zeros(0, dtype=np.float32)
    vectors = await embedder.embed([c.text for c in candidates])
    scores = score_candidates(question, question_vector, candidates, vectors, [p.score for p in passages], config)
    return candidates, scores


async def extractive_answer(
    question: str,
    question_vector: Sequence[float],
    passages: Sequence[Passage],
    embedder: Embedder,
    config: ExtractiveConfig = DEFAULT_CONFIG,
) -> str:
    """The quoted answer with its ``[n]``, or the refusal when no sentence answers the question well enough."""
    candidates, scores = await _scored(question, question_vector, passages, embedder, config)
    return compose_answer(candidates, scores, config, asks_version=bool(_ASKS_VERSION.search(question)))


async def best_support(
    question: str,
    question_vector: Sequence[float],
    passages: Sequence[Passage],
    embedder: Embedder,
    config: ExtractiveConfig = DEFAULT_CONFIG,
) -> float:
    """The score of the sentence that best answers the question (0 without any): below ``config.min_score`` the
    sources do not answer it, whichever strategy would write the answer."""
    _, scores = await _scored(question, question_vector, passages, embedder, config)
    return float(np.max(scores)) if len(scores) else 0.0
