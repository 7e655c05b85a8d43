"""The extractive answer: the sentences of the sources that answer the question, quoted with their citation.

Small models paraphrase and get numbers, defaults and names wrong; a quoted sentence cannot. The question's
embedding (already computed for retrieval) is compared with every sentence of the passages that went into the
context; the best sentence is the answer, followed by the next sentence of the same passage when it continues the
thought ("It ...", "This ...") or scores nearly as well. Below ``min_similarity`` nothing in the sources answers
the question, and the answer is the refusal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from processors.citations import REFUSAL
from processors.guardrails.stream_guard import split_sentences
from processors.protocols import Embedder
from schemas.events import Passage

_CONTINUES = re.compile(r"^(it|this|that|these|those|they|its|their|such|so|then|for example|however|but)\b", re.I)
_WORDS = re.compile(r"\w+")


def candidate_sentences(passages: Sequence[Passage]) -> list[tuple[int, int, str]]:
    """(source number, position, sentence) for the sentences worth quoting: 5 to 80 words, not headings."""
    out = []
    for number, passage in enumerate(passages, start=1):
        for position, sentence in enumerate(split_sentences(passage.text)):
            words = len(_WORDS.findall(sentence))
            if 5 <= words <= 80 and sentence[-1:] in ".!?:)" + '"':
                out.append((number, position, sentence))
    return out


async def extractive_answer(
    question_vector: Sequence[float],
    passages: Sequence[Passage],
    embedder: Embedder,
    *,
    min_similarity: float = 0.35,
    follow_ratio: float = 0.9,
) -> str:
    """The quoted answer with its ``[n]``, or the refusal when no sentence is close enough to the question."""
    candidates = candidate_sentences(passages)
    if not candidates or not question_vector:
        return REFUSAL
    vectors = await embedder.embed([sentence for _, _, sentence in candidates])
    query = np.asarray(question_vector, dtype=np.float32)
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(query)), 1e-9) + 1e-9)
    best = int(np.argmax(scores))
    if float(scores[best]) < min_similarity:
        return REFUSAL
    number, position, sentence = candidates[best]
    quoted = [sentence]
    following = [
        i for i, (n, p, _) in enumerate(candidates) if n == number and p == position + 1
    ]  # the next sentence of the same passage, if it is quotable
    if following:
        nxt = following[0]
        if _CONTINUES.match(candidates[nxt][2]) or float(scores[nxt]) >= follow_ratio * float(scores[best]):
            quoted.append(candidates[nxt][2])
    return f"{' '.join(quoted)} [{number}]"
