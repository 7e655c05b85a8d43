"""A claim checker that needs no model: the details small models get wrong, compared token by token.

What it compares, in the sentence and the passage: numbers and versions (``42``, ``3.10``, "forty-two"), units of
time and size (seconds vs milliseconds), code identifiers (``os.path.join``, ``getdefaulttimeout()``, ``--force``,
``DEFAULT_PROTOCOL``), negation and antonyms (mutable vs immutable, can vs cannot), and absolute quantifiers
(always/never/only). A detail of the sentence that the passage states differently is a contradiction; a sentence whose
content the passage does not cover is "not mentioned"; one whose content words and details the passage holds is
supported. It reads words, not meaning: paraphrases that change the words a lot look "not mentioned", and a wrong
claim phrased with the passage's own details looks supported. Its accuracy on a hand-labelled set is measured in
``benchmarks/eval/claims``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from processors.claims.verdicts import ClaimVerdict
from processors.evaluation.correctness import normalize

_WORD = re.compile(r"[a-z][a-z0-9_]*")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)*(?![\w])")
_IDENTIFIER = re.compile(
    r"(?<![\w.])(?:[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+(?:\(\))?|[a-z_][a-z0-9_]*\(\)|[a-z]+_[a-z0-9_]+"
    r"|--?[a-z][a-z0-9-]*)(?![\w])"
)
_UNITS = {
    "time": ("nanosecond", "microsecond", "millisecond", "second", "minute", "hour", "day"),
    "size": ("bit", "byte", "kilobyte", "kib", "kb", "megabyte", "mib", "mb", "gigabyte", "gib", "gb"),
}
# A quantity in base units (seconds, bytes), so "200 milliseconds" and "0.2 seconds" are one value.
_SCALE = {
    "nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "ms": 1e-3, "second": 1.0, "minute": 60.0,
    "hour": 3600.0, "day": 86400.0, "bit": 0.125, "byte": 1.0, "kilobyte": 1e3, "kb": 1e3, "kib": 1024.0,
    "megabyte": 1e6, "mb": 1e6, "mib": 1024.0**2, "gigabyte": 1e9, "gb": 1e9, "gib": 1024.0**3,
}  # fmt: skip
_QUANTITY = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_SCALE, key=len, reverse=True)) + r")s?\b")
# A release named as such ("Python 3.8", "new in version 3.7", "since 2.4"): the claim's "when" is one of these.
_VERSION = re.compile(r"\b(?:python|version|since|added in|new in|changed in|deprecated in)\s+(\d+\.\d+)(?!\.?\d)")
_NEGATION = {"not", "no", "never", "cannot", "nor", "neither", "without", "none", "nothing"}
_CONTRACTION = re.compile(r"\b\w+n't\b")
_ANTONYMS = (
    ("mutable", "immutable"), ("safe", "unsafe"), ("blocking", "non-blocking"), ("synchronous", "asynchronous"),
    ("stable", "unstable"), ("ascending", "descending"), ("enabled", "disabled"), ("true", "false"),
    ("increase", "decrease"), ("increases", "decreases"), ("minimum", "maximum"), ("smaller", "larger"),
    ("inclusive", "exclusive"), ("required", "optional"), ("allowed", "forbidden"), ("public", "private"),
    ("deprecated", "recommended"), ("faster", "slower"), ("absolute", "relative"),
)  # fmt: skip
# Words next to a number that name no quantity of their own: a slot for any number at all.
_GENERIC_SLOTS = frozenset({"number", "numeral", "digit", "integer", "example"})
_NEGATION_REACH = 3  # a negation cue negates the next few words
_FOLD = {right: left for left, right in _ANTONYMS}
_QUANTIFIERS = {"always": "some", "never": "some", "only": "some", "all": "some", "every": "some"}
_HEDGES = {"usually", "often", "may", "might", "can", "sometimes", "some", "typically", "generally", "most"}
_STOP = frozenset(
    """a an the of to in on at by for with from and or but is are was were be been being it its this that these those
    as into than then so such can could should would will may might must do does did has have had which who what when
    where how why also only just very more most other some any each every all no not you your we our they their there
    here one two use used using""".split()  # noqa: SIM905
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _content(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w not in _STOP and len(w) > 2}


def _topic(text: str) -> set[str]:
    """Content words with each antonym pair folded onto one word: "mutable" and "immutable" are one topic."""
    return {_FOLD.get(word, word) for word in _content(text)}


def _plain(text: str) -> str:
    """Thousands separators out of numbers ("1,000,000" -> "1000000")."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


def _quantities(text: str) -> set[float]:
    return {round(float(value) * _SCALE[unit], 9) for value, unit in _QUANTITY.findall(text)}


def _core(identifier: str) -> str:
    return identifier.strip("-").removesuffix("()")


class _Clause:
    """One clause (text between , ; : . and the like): its content words, and those a negation cue reaches."""

    def __init__(self, text: str) -> None:
        tokens = _WORD.findall(text.replace("n't", " not"))
        self.words = {_stem(t) for t in tokens if t not in _STOP and len(t) > 2}
        self.negated: set[str] = set()
        self.has_cue = False
        for i, token in enumerate(tokens):
            if token in _NEGATION:
                self.has_cue = True
                reach = tokens[i + 1 : i + 1 + _NEGATION_REACH]
                self.negated |= {_stem(t) for t in reach if t not in _STOP and len(t) > 2}


def _clauses(text: str) -> list[_Clause]:
    return [_Clause(part) for part in re.split(r"[,;:.!?()\u2014]|\s-\s|\bwhereas\b|\bbut\b", text) if part.strip()]


def _flipped(negating: list[_Clause], affirming: list[_Clause]) -> set[str]:
    """Words one text negates in a clause that the other states, with no negation at all, in a clause about the
    same thing (at least two more content words in common): "X is not Y" against "X is Y", not against a passage
    that merely uses Y somewhere else."""
    flipped: set[str] = set()
    for mine in negating:
        for theirs in affirming:
            if theirs.has_cue:
                continue
            for word in mine.negated & theirs.words:
                if len((mine.words & theirs.words) - {word}) >= 2:
                    flipped.add(word)
    return flipped


def _units(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for dimension, names in _UNITS.items():
        for name in names:
            if re.search(rf"\b{name}s?\b", text):
                found.setdefault(dimension, set()).add(name)
    return found


def _negated(text: str) -> bool:
    words = set(_WORD.findall(text))
    return bool(words & _NEGATION or _CONTRACTION.search(text))


def _has(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


class LexicalClaimChecker:
    """A :class:`~processors.claims.verdicts.ClaimChecker` comparing details token by token (see the module)."""

    name = "lexical"

    def __init__(self, *, support: float = 0.5, topical: float = 0.3) -> None:
        self.support = support  # share of the sentence's content words the passage must hold to support it
        self.topical = topical  # below this share the passage is about something else: not mentioned

    def check(self, sentence: str, passage: str) -> ClaimVerdict:
        s, p = _plain(normalize(sentence)), _plain(normalize(passage))
        words = _topic(s)
        overlap = len(words & _topic(p)) / len(words) if words else 1.0
        if overlap < self.topical:
            return ClaimVerdict("not_mentioned", f"{overlap:.0%} of its content words are in the passage")
        reasons = list(self._conflicts(s, p))
        if reasons:
            return ClaimVerdict("contradicted", "; ".join(reasons))
        doubts = list(self._doubts(s, p))
        if doubts:
            # Word-level negation and hedging are as often paraphrase as contradiction (half of them, on the
            # development half of the labelled claims): not proof enough to tell a reader an answer is wrong.
            return ClaimVerdict("not_mentioned", "possibly contradicted: " + "; ".join(doubts))
        missing = {n for n in set(_NUMBER.findall(s)) - set(_NUMBER.findall(p)) if not self._as_quantity(n, s, p)}
        missing |= {i for i in _IDENTIFIER.findall(s) if not _has(p, _core(i))}
        if missing:
            return ClaimVerdict("not_mentioned", f"the passage does not state {', '.join(sorted(missing)[:3])}")
        if overlap >= self.support:
            return ClaimVerdict("supported", f"{overlap:.0%} of its content words and all its details are there")
        return ClaimVerdict("not_mentioned", f"only {overlap:.0%} of its content words are in the passage")

    @staticmethod
    def _as_quantity(number: str, s: str, p: str) -> bool:
        """Whether ``number`` is part of a quantity the passage states in other units."""
        mine = {q for q in _quantities(s) if any(value == number for value, _ in _QUANTITY.findall(s))}
        return bool(mine & _quantities(p))

    def _conflicts(self, s: str, p: str) -> Iterable[str]:
        yield from self._number_conflicts(s, p)
        versions_s, versions_p = set(_VERSION.findall(s)), set(_VERSION.findall(p))
        if versions_s and versions_p and not versions_s & versions_p:
            yield f"it says version {min(versions_s)}, the passage {', '.join(sorted(versions_p))}"
        units_s, units_p = _units(s), _units(p)
        for dimension, names in units_s.items():
            if dimension in units_p and not names & units_p[dimension] and not _quantities(s) & _quantities(p):
                yield f"it says {', '.join(sorted(names))}, the passage {', '.join(sorted(units_p[dimension]))}"
        ids_s, ids_p = {_core(i) for i in _IDENTIFIER.findall(s)}, {_core(i) for i in _IDENTIFIER.findall(p)}
        for ident in sorted(ids_s - ids_p):
            if _has(p, ident):
                continue
            stem = re.split(r"[._]", ident)[0]
            rivals = sorted(other for other in ids_p - ids_s if stem and re.split(r"[._]", other)[0] == stem)
            if rivals:
                yield f"it names {ident}, the passage {rivals[0]}"
        for left, right in _ANTONYMS:
            for said, other in ((left, right), (right, left)):
                if _has(s, said) and not _has(s, other) and _has(p, other) and not _has(p, said):
                    yield f"it says {said}, the passage {other}"

    @staticmethod
    def _doubts(s: str, p: str) -> Iterable[str]:
        clauses_s, clauses_p = _clauses(s), _clauses(p)
        flipped = _flipped(clauses_s, clauses_p) | _flipped(clauses_p, clauses_s)
        if flipped:
            yield f"it negates what the passage affirms, or the reverse ({', '.join(sorted(flipped)[:3])})"
        for word in _QUANTIFIERS:
            if _has(s, word) and not _has(p, word) and any(_has(p, hedge) for hedge in _HEDGES):
                yield f"it says {word}, the passage hedges"

    @staticmethod
    def _number_conflicts(s: str, p: str) -> Iterable[str]:
        """A number the passage gives a different value in the same place: the same word next to it."""
        if _quantities(s) and _quantities(s) <= _quantities(p):
            return
        slots_p: dict[str, set[str]] = {}
        for match in _NUMBER.finditer(p):
            if _quoted(p, match.start(), match.end()):
                continue
            for word in _neighbours(p, match.start(), match.end()):
                slots_p.setdefault(word, set()).add(match.group())
        for match in _NUMBER.finditer(s):
            value = match.group()
            if value in set(_NUMBER.findall(p)) or _quoted(s, match.start(), match.end()):
                continue
            for word in _neighbours(s, match.start(), match.end()):
                rivals = slots_p.get(word, set()) - {value}
                if rivals:
                    yield f"it says {value} ({word}), the passage {', '.join(sorted(rivals))}"
                    return


def _quoted(text: str, start: int, end: int) -> bool:
    """Whether a number is a literal in quotes or backticks (``int('144')``, ``'0'``): text, not a value that the
    words around it measure."""
    return start > 0 and text[start - 1] in "'\"`" and text[end : end + 1] == text[start - 1]


def _neighbours(text: str, start: int, end: int) -> set[str]:
    """The content words just before and after a span (two on each side), less words that say only that it is a
    number ("the number 144" and "a decimal number (except 0)" are not about the same thing)."""
    before = [w for w in _WORD.findall(text[max(0, start - 40) : start]) if w not in _STOP][-2:]
    after = [w for w in _WORD.findall(text[end : end + 40]) if w not in _STOP][:2]
    return {_stem(w) for w in (*before, *after)} - _GENERIC_SLOTS
