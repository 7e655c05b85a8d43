"""English function words, the one list every stage that weighs words by content uses.

Function words ("how", "do", "I", "the") say little about what a text is about, and in an inverted index they have
the longest posting lists: the BM25 half of a hybrid search walks every document that contains "the" to add a
near-zero score. Stages add their own domain words on top (the stream guard also ignores "source" and "answer").
"""

from __future__ import annotations

import re
from typing import Final

FUNCTION_WORDS: Final = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves may might must
    shall one two use used using yes""".split()  # noqa: SIM905
)

_WORD: Final = re.compile(r"\w+")


def keyword_query(text: str) -> str:
    """``text`` without its function words, as a BM25 query: the same ranking signal (their IDF is near zero)
    for a fraction of the posting lists. A text made only of function words is kept whole, so it still matches."""
    words = _WORD.findall(text)
    kept = [w for w in words if w.lower() not in FUNCTION_WORDS]
    return " ".join(kept) if kept else text
