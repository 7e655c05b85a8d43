"""Unicode normalisation and binary-garbage detection, run before every other check.

Why: "ig\u200bnore previous instructions", full-width "\\uff49\\uff47nore", right-to-left overrides and Unicode tag
characters (invisible ASCII smuggling) all read the same to an LLM but defeat naive regexes and word models. So
every check sees text that is NFKC-normalised, with invisible format characters removed and, for mixed-script
words only, Cyrillic/Greek look-alikes folded to Latin (a whole Russian sentence is left alone).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

# Zero-width and invisible format characters, bidi controls, tag characters, variation selectors, fillers.
_INVISIBLE_RE: Final = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e001f\U000e007f\U000e0100-\U000e01ef]"
)
# Unicode tag characters U+E0020..U+E007E mirror ASCII invisibly ("ASCII smuggling"): a model may read them, so
# they are revealed as the ASCII they encode (and then checked) rather than silently dropped.
_TAG_RE: Final = re.compile("[\U000e0020-\U000e007e]")

# Common Cyrillic / Greek letters that render like Latin ones (Unicode confusables, the frequent subset).
_CONFUSABLES: Final = str.maketrans(
    {
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
        "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ɡ": "g", "А": "A", "В": "B", "Е": "E", "К": "K",
        "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
        "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u", "ε": "e", "Α": "A",
        "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
        "Τ": "T", "Υ": "Y", "Χ": "X",
    }
)  # fmt: skip
_WORD_RE: Final = re.compile(r"\w+")
_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Normalized:
    text: str
    changed: bool
    removed_invisible: int
    folded_homoglyphs: int


def _fold_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if word.isascii():
        return word
    folded = word.translate(_CONFUSABLES)
    # Fold only words that mix scripts: after folding they are pure ASCII letters while the original was not.
    has_latin = any("a" <= ch.lower() <= "z" for ch in word)
    return folded if has_latin and folded.isascii() else word


def normalize(text: str) -> Normalized:
    """NFKC, invisible characters removed, mixed-script look-alikes folded. Idempotent."""
    revealed, tags = _TAG_RE.subn(lambda m: chr(ord(m.group(0)) - 0xE0000), text)
    stripped, removed = _INVISIBLE_RE.subn("", revealed)
    removed += tags
    nfkc = unicodedata.normalize("NFKC", stripped)
    # NFKC can produce new invisible characters from compatibility forms; strip once more.
    nfkc, removed2 = _INVISIBLE_RE.subn("", nfkc)
    folded_count = 0

    def fold(m: re.Match[str]) -> str:
        nonlocal folded_count
        out = _fold_word(m)
        if out != m.group(0):
            folded_count += 1
        return out

    folded = _WORD_RE.sub(fold, nfkc)
    return Normalized(folded, folded != text, removed + removed2, folded_count)


# Dash and dot look-alikes that NFKC keeps as they are (U+2013 between the groups of "0161 496 0000", U+00B7 in
# "06·39·98·12·34"): folded for PII detection only, so separators written with them do not hide a number.
_DETECTION_FOLD: Final = {
    **{ch: "-" for ch in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"},
    **{ch: "." for ch in "\u00b7\u2022\u2024\u2027\u30fb"},
}


@dataclass(frozen=True, slots=True)
class MappedText:
    """Text normalised for detection, with where each of its characters came from in the source.

    ``origin[i]`` is the source index of ``text[i]``; ``origin[len(text)]`` is ``len(source)``. A span ``[s, e)`` of
    ``text`` covers ``source[origin[s] : origin[e - 1] + 1]``, so a mask found on the normalised text can be put on
    the original characters (fullwidth digits, zero-width spaces inside a card number and all).
    """

    text: str
    origin: list[int]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        if end <= start:
            return self.origin[start], self.origin[start]
        return self.origin[start], self.origin[end - 1] + 1

    def source_index(self, i: int) -> int:
        return self.origin[i]

    def view_index(self, source_index: int) -> int:
        """The first character of ``text`` that comes from ``source[source_index:]`` (bisect on ``origin``)."""
        lo, hi = 0, len(self.text)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.origin[mid] < source_index:
                lo = mid + 1
            else:
                hi = mid
        return lo


def normalize_mapped(text: str) -> MappedText:
    """Per character: invisible ones dropped, tag characters revealed, NFKC, dash and dot look-alikes folded.

    Per character rather than per string, so every output character knows its source; NFKC composition across
    characters does not matter for the digit, letter and separator shapes PII recognisers look at.
    """
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            origin.append(i)
            continue
        source = ch
        if _TAG_RE.match(ch):
            source = chr(ord(ch) - 0xE0000)
        elif _INVISIBLE_RE.match(ch):
            continue
        for piece in unicodedata.normalize("NFKC", source):
            if _INVISIBLE_RE.match(piece):
                continue
            out.append(_DETECTION_FOLD.get(piece, piece))
            origin.append(i)
    origin.append(len(text))
    return MappedText("".join(out), origin)


def garbage_ratio(text: str) -> float:
    """Share of characters that no human text contains: controls, surrogates, private use, unassigned, U+FFFD."""
    if not text:
        return 0.0
    bad = 0
    for ch in text:
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        if cat in {"Cc", "Cs", "Co", "Cn"} or ch == "\ufffd":
            bad += 1
    return bad / len(text)


def estimate_tokens(text: str) -> int:
    """Words and punctuation marks: close to (slightly under) a BPE count for English, cheap and monotonic."""
    return sum(1 for _ in _TOKEN_RE.finditer(text))
