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
    OPTIONAL_ENTITIES,
    PATTERN_ENTITIES,
    PatternSpec,
    PiiAnalyzer,
    PiiEntity,
    apply_masks,
    get_pii_analyzer,
    pattern_candidates,
    placeholder,
    resolve_overlaps,
    specs_for,
)
from processors.guardrails.policy import GuardPolicy
from processors.guardrails.textnorm import normalize_mapped
from processors.guardrails.toxicity import ToxicityScorer, get_toxicity_scorer
from processors.words import FUNCTION_WORDS
from schemas.events import GuardVerdict, Passage

CONTEXT_CHARS: Final = 64
"""Raw emitted characters kept as left context (look-behinds and context words need them)."""
MAX_HOLD: Final = 480
"""Longest possible entity (an e-mail: 64 local + 6 domain labels + TLD): no prefix can start further back."""
_ASCII_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


REDACTED: Final = "<REDACTED>"
"""What a cut-off stream emits instead of a held-back fragment that could be the start of an entity."""
FRAGMENT_MIN_DIGITS: Final = 3
"""A held-back tail with this many digits (or an "@") is a possible entity fragment when the stream is cut."""


class PiiStreamMasker:
    """The leak-proof part alone: ``push`` returns masked text that can be sent now, ``finish`` the rest.

    Detection runs on a normalised view of the window (:func:`normalize_mapped`: fullwidth digits, zero-width and
    non-breaking spaces, dash look-alikes), and masks are placed on the original characters, which are what is sent.
    """

    def __init__(self, entities: Sequence[str] = PATTERN_ENTITIES, *, threshold: float = 0.5) -> None:
        self.specs: tuple[PatternSpec, ...] = specs_for(
            (e for e in entities if e in PATTERN_ENTITIES), streamable_only=True
        )
        self.threshold = threshold
        self.entities: list[PiiEntity] = []
        self.redacted = 0
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

    def finish(self, *, truncated: bool = False) -> str:
        """The rest of the text. ``truncated`` (a cancel, a ``max_tokens`` cut, a block): the stream stopped where
        the model did not mean to, so a held-back tail that could be the start of an entity ("078-05-",
        "jane.doe@exa") is replaced by ``<REDACTED>`` instead of being sent. A complete stream is masked exactly
        like one-pass masking of the whole text."""
        if not truncated and not self._buf.rstrip().endswith(("-", "/", "@", "(", "+")):
            return self._release(final=True)
        out = self._release(final=False)
        if not self._buf:
            return out
        # What is still held could grow into an entity. Mask what is complete in it; a fragment is dropped.
        tail = self._release(final=True, fragments=True)
        return out + tail

    def _hold_start(self, window: str, base: int) -> int:
        n = len(window)
        for p in range(max(base, n - MAX_HOLD), n):
            if p > 0 and window[p - 1] in _ASCII_ALNUM:
                continue  # every entity regex needs a non-alphanumeric character before its start
            for spec in self.specs:
                if spec.pattern.fullmatch(window, p, n, partial=True) is not None:
                    return p
        return n

    def _release(self, *, final: bool, fragments: bool = False) -> str:
        if not self._buf:
            return ""
        raw_window = self._ctx + self._buf
        view = normalize_mapped(raw_window)
        window = view.text
        base = view.view_index(len(self._ctx))
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
        raw_base = len(self._ctx)
        raw_cut = view.source_index(cut) if cut < len(window) else len(raw_window)
        raw_spans = [c.moved(*view.source_span(c.start, c.end)) for c in chosen]
        out = apply_masks(raw_window[raw_base:raw_cut], raw_spans, offset=raw_base)
        if fragments:
            out = self._redact_fragments(raw_window, raw_base, raw_spans, out)
        self.entities.extend(c.shifted(self._offset - raw_base) for c in raw_spans)
        self._ctx = (self._ctx + raw_window[raw_base:raw_cut])[-CONTEXT_CHARS:]
        self._buf = raw_window[raw_cut:]
        self._offset += raw_cut - raw_base
        return out

    def _redact_fragments(self, raw_window: str, raw_base: int, spans: Sequence[PiiEntity], masked: str) -> str:
        """The unmasked pieces of a cut-off tail: one that carries digits or an "@" becomes ``<REDACTED>``."""
        pieces: list[tuple[int, int]] = []
        cur = raw_base
        for e in spans:
            pieces.append((cur, e.start))
            cur = e.end
        pieces.append((cur, len(raw_window)))
        out: list[str] = []
        for i, (s, t) in enumerate(pieces):
            seg = raw_window[s:t]
            view = normalize_mapped(seg).text
            digits = sum(ch.isdigit() for ch in view)
            if digits >= FRAGMENT_MIN_DIGITS or "@" in view:
                # keep the words before the fragment: only the last token run can be an entity's start
                # (any whitespace: a card grouped with no-break spaces is one fragment, not "5555" + the rest)
                m = re.search(r"(?:^|\s)(\S*[\d@][\s\S]*)$", seg) if seg.strip() else None
                keep = seg[: m.start(1)] if m else ""
                seg = keep + REDACTED
                self.redacted += 1
            out.append(seg)
            if i < len(spans):
                out.append(placeholder(spans[i].entity_type))
        return "".join(out)


# --- groundedness and citations --------------------------------------------------------------------------------

_WORD_RE: Final = re.compile(r"[a-z0-9]+")
_PLACEHOLDER_RE: Final = re.compile(r"<[A-Z_]+>")
# Sentence ends, but not after a title or a common abbreviation ("Dear Mr. Smith" is one sentence).
_SENT_RE: Final = re.compile(
    r"(?<![MmDd]r\.)(?<![Mm]rs\.)(?<![Mm]s\.)(?<!\bSt\.)(?<![Nn]o\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bvs\.)"
    r"(?<!\bNr\.)(?<!\bca\.)(?<=[.!?])[\"')\]]*\s+|\n+"
)
STOPWORDS: Final = FUNCTION_WORDS | {"according", "source", "sources", "passage", "passages", "answer"}


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


MAX_SENTENCE_CHARS: Final = 200
"""A run-on "sentence" (a list, a code block) is judged and sent in clauses of at most about this size: cut at the
last clause mark (, ; :) or space before it, so the client never waits long for the first words."""


class StreamingOutputGuard:
    """One per answer. ``push(piece)`` -> text safe to send now; ``finish()`` -> the rest; then ``report()``.

    Two stages. The PII masker works on characters (prefix hold-back, see :class:`PiiStreamMasker`). Then, when the
    policy checks toxicity or masks sentence-level entities (names, addresses, dates of birth, passports), the
    masked text is held until its sentence is complete and judged whole: "Fraud alert: ..." is scored as a
    sentence, never as "Fraud". Sending goes sentence by sentence; a blocked sentence is never sent.
    """

    def __init__(
        self,
        policy: GuardPolicy,
        passages: Sequence[Passage] = (),
        *,
        toxicity: ToxicityScorer | None = None,
        pii: PiiAnalyzer | None = None,
    ) -> None:
        self.policy = policy
        self.passages = [p.text for p in passages]
        hidden = [*policy.mask_entities, *policy.block_entities]
        self._masker = PiiStreamMasker([e for e in hidden if e in PATTERN_ENTITIES], threshold=policy.pii_threshold)
        self._sentence_entities = sorted({e for e in hidden if e in OPTIONAL_ENTITIES})
        self._pii = pii
        self._tox = toxicity
        self._by_sentence = policy.output_toxicity_action != "off" or bool(self._sentence_entities)
        self._hold_all = policy.groundedness_action == "refuse"
        self._emitted: list[str] = []
        self._pending: list[str] = []  # screened, not yet sent (hold-all mode)
        self._open = ""  # masked text of the sentence being streamed, not yet judged
        self._sentence_found: list[PiiEntity] = []
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

    def _judge(self, sentence: str) -> str:
        """One complete sentence: mask sentence-level entities, then toxicity; returns what may be sent."""
        if self._sentence_entities and sentence.strip():
            if self._pii is None:
                self._pii = get_pii_analyzer()
            found = self._pii.analyze(sentence, self._sentence_entities, threshold=self.policy.pii_threshold)
            if found:
                self._sentence_found.extend(found)
                sentence = apply_masks(sentence, found)
        if self.policy.output_toxicity_action == "off" or not sentence.strip():
            return sentence
        result = self._toxicity().check(sentence)
        if result.score >= self.policy.toxicity_threshold:
            self._tox_max = max(self._tox_max, result.score)
            for r in result.reasons:
                if r not in self._tox_reasons:
                    self._tox_reasons.append(r)
            if self.policy.output_toxicity_action == "block":
                self._blocked = True
                return ""
        return sentence

    def _complete_sentences(self, *, final: bool) -> str:
        """Judge and return every complete sentence of the open text (all of it when ``final``)."""
        if final:
            ready, self._open = self._open, ""
        else:
            ends = [m.end() for m in _SENT_RE.finditer(self._open)]
            cut = ends[-1] if ends else 0
            if not cut and len(self._open) > MAX_SENTENCE_CHARS:
                head = self._open[:MAX_SENTENCE_CHARS]
                clause = max(head.rfind(", "), head.rfind("; "), head.rfind(": "))
                cut = clause + 2 if clause > 0 else (head.rfind(" ") + 1 or MAX_SENTENCE_CHARS)
            ready, self._open = self._open[:cut], self._open[cut:]
        if not ready:
            return ""
        out: list[str] = []
        start = 0
        bounds = [m.end() for m in _SENT_RE.finditer(ready)]
        for end in [*bounds, len(ready)]:
            if end <= start:
                continue
            judged = self._judge(ready[start:end])
            if self._blocked:
                break
            out.append(judged)
            start = end
        return "".join(out)

    def _deliver(self, masked: str, *, final: bool = False) -> str:
        if self._blocked:
            return ""
        if self._by_sentence:
            self._open += masked
            masked = self._complete_sentences(final=final)
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

    def finish(self, *, truncated: bool = False) -> str:
        """The rest of the answer. ``truncated`` when generation was cut (``max_tokens``, cancel, block): a held
        possible-entity fragment is then redacted, never sent (see :meth:`PiiStreamMasker.finish`)."""
        if self._finished is not None:
            return ""
        out = "" if self._blocked else self._deliver(self._masker.finish(truncated=truncated), final=True)
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
        found = [*self._masker.entities, *self._sentence_found]
        types = sorted({e.entity_type for e in found})
        for t in types:
            of_type = [e for e in found if e.entity_type == t]
            why = ",".join(sorted({e.why for e in of_type}))
            reasons.append(f"pii_masked:{t}x{len(of_type)}[{why}]")
        if self._masker.redacted:
            reasons.append(f"pii_fragment_redacted:x{self._masker.redacted}")
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
        elif found or refused or self._masker.redacted:
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
