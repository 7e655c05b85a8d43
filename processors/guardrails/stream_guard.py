"""Streaming output guard: masks PII in a token stream without ever emitting a prefix of an entity.

How the hold-back works (:class:`PiiStreamMasker`). Every streamable entity is a regex plus a validator
(:mod:`processors.guardrails.pii`). After each piece we compute, over the not-yet-emitted buffer:

- ``hold``: the smallest position ``p`` from which the rest of the buffer is a *prefix of a possible match* of some
  entity regex (``regex`` partial full-match, with the real left context so look-behinds hold). Text from ``p`` on
  could still become (part of) an entity, so it stays; nothing before ``p`` can start one that reaches the end.
- every complete validated match in the buffer; if one straddles ``hold`` the cut moves back to its start, until
  no match straddles it. Matches wholly before the cut are masked and the text before the cut is emitted.

Why that suffices: an entity of the final text that reaches past the current buffer end starts at some boundary
``a`` whose buffer suffix is a prefix of that entity, so ``a >= hold`` and it is not emitted; an entity that ends
inside the buffer is visible now and is masked or held whole. So what is emitted equals the batch masking of the
final text, cut at some point, and the tests check exactly that on random splits. Hold-back is minimal in the
sense that it is exactly the possible-entity tail: for prose it is the last word until whitespace arrives (a word
could be an e-mail's local part), for digits the run until something that cannot extend a number.

On top: toxicity of the current sentence before each release (blocks or flags per policy), citation numbers checked
against the passages, and a per-sentence groundedness score (:func:`support`) reported at the end; with
``groundedness_action="refuse"`` the answer is held whole and replaced by the refusal when ungrounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from processors.citations import MARKER, cited_numbers
from processors.guardrails.pii import (
    PATTERN_ENTITIES,
    PatternSpec,
    PiiEntity,
    apply_masks,
    pattern_candidates,
    resolve_overlaps,
    specs_for,
)
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.toxicity import ToxicityScorer, get_toxicity_scorer
from schemas.events import GuardVerdict, Passage

CONTEXT_CHARS: Final = 64
"""Raw emitted characters kept as left context (look-behinds and context words need them)."""
MAX_HOLD: Final = 480
"""Longest possible entity (an e-mail: 64 local + 6 domain labels + TLD): no prefix can start further back."""
_ASCII_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


class PiiStreamMasker:
    """The leak-proof part alone: ``push`` returns masked text that can be sent now, ``finish`` the rest."""

    def __init__(self, entities: Sequence[str] = PATTERN_ENTITIES, *, threshold: float = 0.5) -> None:
        self.specs: tuple[PatternSpec, ...] = specs_for(e for e in entities if e in PATTERN_ENTITIES)
        self.threshold = threshold
        self.entities: list[PiiEntity] = []
        self.max_held = 0
        self._ctx = ""
        self._buf = ""
        self._offset = 0  # stream position of _buf[0]

    @property
    def held(self) -> int:
        """Characters currently held back (a count, never the text)."""
        return len(self._buf)

    def push(self, piece: str) -> str:
        self._buf += piece
        out = self._release(final=False)
        self.max_held = max(self.max_held, len(self._buf))
        return out

    def finish(self) -> str:
        return self._release(final=True)

    def _hold_start(self, window: str, base: int) -> int:
        n = len(window)
        for p in range(max(base, n - MAX_HOLD), n):
            if p > 0 and window[p - 1] in _ASCII_ALNUM:
                continue  # every entity regex needs a non-alphanumeric character before its start
            for spec in self.specs:
                if spec.pattern.fullmatch(window, p, n, partial=True) is not None:
                    return p
        return n

    def _release(self, *, final: bool) -> str:
        if not self._buf:
            return ""
        window = self._ctx + self._buf
        base = len(self._ctx)
        if not self.specs:
            cut, chosen = len(window), []
        else:
            cands = pattern_candidates(window, self.specs, pos=base, threshold=self.threshold)
            cut = len(window) if final else self._hold_start(window, base)
            moved = True
            while moved:
                moved = False
                for c in cands:
                    if c.start < cut < c.end:
                        cut, moved = c.start, True
            chosen = resolve_overlaps(c for c in cands if c.end <= cut)
        raw = window[base:cut]
        out = apply_masks(raw, chosen, offset=base)
        self.entities.extend(c.shifted(self._offset - base) for c in chosen)
        self._ctx = (self._ctx + raw)[-CONTEXT_CHARS:]
        self._buf = window[cut:]
        self._offset += cut - base
        return out


# --- groundedness and citations --------------------------------------------------------------------------------

_WORD_RE: Final = re.compile(r"[a-z0-9]+")
_PLACEHOLDER_RE: Final = re.compile(r"<[A-Z_]+>")
_SENT_RE: Final = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
STOPWORDS: Final = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves may might must
    shall one two use used using yes according source sources passage passages answer""".split()  # noqa: SIM905
)


def _stem(word: str) -> str:
    """Crude suffix stripping: enough for "connections"/"connection", cheap and deterministic."""
    for suffix in ("ing", "edly", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    text = _PLACEHOLDER_RE.sub(" ", MARKER.sub(" ", text)).lower()
    return {_stem(w) for w in _WORD_RE.findall(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's content words found in the passage: 1.0 copied, ~0 unrelated."""
    words = content_words(sentence)
    if not words:
        return 1.0
    return len(words & content_words(passage)) / len(words)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_RE.split(text) if s and s.strip()]


@dataclass(frozen=True, slots=True)
class SentenceCheck:
    index: int
    support: float
    best_passage: int | None  # 1-based, like citations
    grounded: bool


def check_groundedness(
    text: str, passages: Sequence[str], threshold: float, *, min_words: int = 3
) -> list[SentenceCheck]:
    """Per sentence: best support over the passages it cites (or all passages when it cites none/invalid)."""
    bags = [content_words(p) for p in passages]
    checks: list[SentenceCheck] = []
    for i, sent in enumerate(split_sentences(text)):
        words = content_words(sent)
        if len(words) < min_words:
            continue  # "Sure." or a bare citation: nothing to ground
        cited = [n for n in cited_numbers(sent) if 1 <= n <= len(bags)]
        pool = cited or list(range(1, len(bags) + 1))
        best, best_n = 0.0, None
        for n in pool:
            s = len(words & bags[n - 1]) / len(words)
            if s > best:
                best, best_n = s, n
        checks.append(SentenceCheck(i, round(best, 4), best_n, best >= threshold))
    return checks


# --- the guard -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class OutputReport:
    """What the guard did; holds masked text only, so it can be logged and put on AnswerDone."""

    verdict: GuardVerdict
    text: str
    entity_types: list[str] = field(default_factory=list)
    invalid_citations: list[int] = field(default_factory=list)
    sentences: list[SentenceCheck] = field(default_factory=list)
    blocked: bool = False
    refused: bool = False
    max_held_chars: int = 0

    @property
    def ungrounded(self) -> list[SentenceCheck]:
        return [s for s in self.sentences if not s.grounded]


class StreamingOutputGuard:
    """One per answer. ``push(piece)`` -> text safe to send now; ``finish()`` -> the rest; then ``report()``."""

    def __init__(
        self,
        policy: GuardPolicy,
        passages: Sequence[Passage] = (),
        *,
        toxicity: ToxicityScorer | None = None,
    ) -> None:
        self.policy = policy
        self.passages = [p.text for p in passages]
        hide = [e for e in (*policy.mask_entities, *policy.block_entities) if e in PATTERN_ENTITIES]
        self._masker = PiiStreamMasker(hide, threshold=policy.pii_threshold)
        self._tox = toxicity
        self._hold_all = policy.groundedness_action == "refuse"
        self._emitted: list[str] = []
        self._pending: list[str] = []  # masked, not yet sent (hold-all mode)
        self._sentence = ""  # masked text of the sentence being streamed, for toxicity
        self._tox_max = 0.0
        self._tox_reasons: list[str] = []
        self._blocked = False
        self._finished: OutputReport | None = None

    @property
    def blocked(self) -> bool:
        return self._blocked

    def _toxicity(self) -> ToxicityScorer:
        if self._tox is None:
            self._tox = get_toxicity_scorer()
        return self._tox

    def _screen(self, masked: str) -> str:
        """Toxicity of the sentence so far, *before* the new text leaves; returns what may be sent."""
        if not masked or self.policy.output_toxicity_action == "off":
            return masked
        self._sentence = (self._sentence + masked)[-1000:]
        result = self._toxicity().check(self._sentence)
        if result.score >= self.policy.toxicity_threshold:
            self._tox_max = max(self._tox_max, result.score)
            for r in result.reasons:
                if r not in self._tox_reasons:
                    self._tox_reasons.append(r)
            if self.policy.output_toxicity_action == "block":
                self._blocked = True
                return ""
        tail = _SENT_RE.split(self._sentence)
        self._sentence = tail[-1] if tail else ""
        return masked

    def _deliver(self, masked: str) -> str:
        if self._blocked:
            return ""
        masked = self._screen(masked)
        if not masked:
            return ""
        if self._hold_all:
            self._pending.append(masked)
            return ""
        self._emitted.append(masked)
        return masked

    def push(self, piece: str) -> str:
        if self._blocked or self._finished is not None:
            return ""
        return self._deliver(self._masker.push(piece))

    def finish(self) -> str:
        if self._finished is not None:
            return ""
        out = "" if self._blocked else self._deliver(self._masker.finish())
        full = "".join(self._emitted + self._pending)
        report = self._build_report(full)
        if self._hold_all and not self._blocked:
            out = self.policy.refusal_text if report.refused else full
            self._emitted.append(out)
        report.text = "".join(self._emitted)
        self._finished = report
        return out

    def report(self) -> OutputReport:
        if self._finished is None:
            raise RuntimeError("report() is available after finish()")
        return self._finished

    def _build_report(self, text: str) -> OutputReport:
        policy = self.policy
        reasons: list[str] = []
        scores: dict[str, float] = {}
        found = self._masker.entities
        types = sorted({e.entity_type for e in found})
        for t in types:
            reasons.append(f"pii_masked:{t}x{sum(1 for e in found if e.entity_type == t)}")
        invalid: list[int] = []
        if policy.citation_action != "off":
            invalid = sorted({n for n in cited_numbers(text) if not 1 <= n <= len(self.passages)})
            if invalid:
                reasons.append("invalid_citation:" + ",".join(map(str, invalid)))
        sentences: list[SentenceCheck] = []
        refused = False
        if policy.groundedness_action != "off" and not self._blocked:
            sentences = check_groundedness(text, self.passages, policy.groundedness_threshold)
            bad = [s for s in sentences if not s.grounded]
            if sentences:
                scores["groundedness_min"] = min(s.support for s in sentences)
                scores["groundedness_mean"] = round(sum(s.support for s in sentences) / len(sentences), 4)
            if bad:
                reasons.append(f"ungrounded_sentences:{len(bad)}/{len(sentences)}")
                share = len(bad) / len(sentences)
                refused = policy.groundedness_action == "refuse" and share > policy.max_ungrounded_share
                if refused:
                    reasons.append("refused:ungrounded")
        if self._tox_reasons or self._tox_max:
            scores["toxicity"] = self._tox_max
            reasons.append(
                ("toxicity_blocked:" if self._blocked else "toxicity_flagged:") + ";".join(self._tox_reasons)
            )
        action: Literal["allow", "modify", "block"]
        if self._blocked:
            action = "block"
        elif found or refused:
            action = "modify"
        else:
            action = "allow"
        return OutputReport(
            verdict=GuardVerdict(action=action, reasons=reasons, scores=scores),
            text=text,
            entity_types=types,
            invalid_citations=invalid,
            sentences=sentences,
            blocked=self._blocked,
            refused=refused,
            max_held_chars=self._masker.max_held,
        )
