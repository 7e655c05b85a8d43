"""Whether an answer states the facts a correct answer must contain (a golden case's ``key_facts``).

Facts are matched after the same normalisation on both sides: case, quotes and dashes, citation markers, and number
words ("forty-two" and "42" are one fact). A fact that is a code identifier or a number must appear as a whole token
("5" is not found in "0.5" or "50"); a word fact may appear inflected ("immutable" in "immutable,").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from processors.citations import strip_citations

_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"})
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": ""})
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NUMBER_WORDS = re.compile(
    r"\b(?:(" + "|".join(_TENS) + r")(?:[- ](" + "|".join(list(_UNITS)[1:10]) + r"))?|(" + "|".join(_UNITS) + r"))"
    r"(?:\s+(hundred|thousand))?\b"
)


def _number_words(match: re.Match[str]) -> str:
    tens, unit, alone, scale = match.groups()
    value = _TENS[tens] + (_UNITS[unit] if unit else 0) if tens else _UNITS[alone]
    if scale:
        value *= 100 if scale == "hundred" else 1000
    return str(value)


def normalize(text: str) -> str:
    """Lower case, plain quotes and dashes, no citation markers, numbers as digits, single spaces."""
    text = strip_citations(text).translate(_DASHES).translate(_QUOTES).lower()
    return " ".join(_NUMBER_WORDS.sub(_number_words, text).split())


def fact_found(answer: str, fact: str) -> bool:
    """Whether the normalised ``fact`` occurs in the normalised ``answer`` as a whole token sequence."""
    needle = normalize(fact)
    if not needle:
        return True
    # Word boundaries that understand code: a fact ends where an identifier or a number would end.
    pattern = r"(?<![\w.])" + re.escape(needle) + r"(?![\w])" if needle[-1].isalnum() else re.escape(needle)
    return re.search(pattern, normalize(answer)) is not None


class FactCheck(msgspec.Struct, frozen=True, kw_only=True):
    found: list[str]
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


def key_facts(answer: str, facts: Sequence[str], alternatives: Mapping[str, Sequence[str]] | None = None) -> FactCheck:
    """Which facts the answer states (a fact counts when it or one of its alternatives is found)."""
    found: list[str] = []
    missing: list[str] = []
    for fact in facts:
        spellings = [fact, *(alternatives or {}).get(fact, ())]
        (found if any(fact_found(answer, spelling) for spelling in spellings) else missing).append(fact)
    return FactCheck(found=found, missing=missing)
