"""Labelled PII sentences generated with Faker: many locales and formats, gold spans, and number distractors.

Gold spans come from construction (we insert the value, so we know where it is), never from the detector.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

from faker import Faker

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "en_CA", "it_IT", "es_ES", "nl_NL", "en_AU", "en_IN"]
IBAN_LOCALES = ["de_DE", "fr_FR", "en_GB", "es_ES", "it_IT", "nl_NL"]
TYPES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]

WITH_CONTEXT = {
    "EMAIL_ADDRESS": ["Please email {} about the invoice.", "My address is {} if you need it.", "Send it to {}."],
    "PHONE_NUMBER": ["Call me on {} after five.", "My phone number is {}.", "You can reach the desk at {} today."],
    "CREDIT_CARD": ["My card number is {} and it was declined.", "Charge the Visa {} please.",
                    "Payment failed for card {} again."],
    "US_SSN": ["My SSN is {} for the form.", "Social security number: {}.", "Use SSN {} on the tax return."],
    "IBAN_CODE": ["Wire the refund to IBAN {} by Friday.", "My bank account is {}.", "Transfer to {} please."],
    "IP_ADDRESS": ["The server at {} is down.", "Requests from {} are blocked.", "Whitelist {} in the firewall."],
}  # fmt: skip
NEUTRAL = ["Here it is: {}.", "{} is the one.", "Note {} for later.", "See ({}) below.", "Value - {} - saved."]
FILLERS = [
    "The meeting moved to 2024-03-15 at 10:30.",
    "Version 3.11.7 fixed 42 bugs.",
    "It costs $1,299.99 or 15% less.",
    "Chapter 7, page 128, line 33.",
    "We shipped 12000 units in Q3.",
    "Order #58213 arrives in 3-5 days.",
    "Python 3.12 was released in October 2023.",
    "Use port 8080 and timeout 30s.",
    "The ratio was 1:4 in 1998.",
    "Ask Maria about it.",
    "Thanks a lot!",
    "Room 4B, floor 12.",
]


def _ascii_word(word: str) -> str:
    """Faker names carry accents and spaces ("van 't Hof"): fold to a plausible ASCII mailbox name."""
    folded = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum()) or "user"


@dataclass(frozen=True, slots=True)
class Gold:
    entity_type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    gold: list[Gold]


class PiiGenerator:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in LOCALES}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed * 100 + i)

    def _faker(self, locales: list[str] | None = None) -> Faker:
        return self.fakers[self.rnd.choice(locales or LOCALES)]

    def value(self, etype: str) -> str:  # noqa: PLR0911 - one branch per type and format
        r = self.rnd.random()
        if etype == "EMAIL_ADDRESS":
            f = self._faker()
            if r < 0.3:
                return str(f.email())
            if r < 0.5:
                return str(f.free_email())
            if r < 0.7:
                return str(f.company_email())
            if r < 0.85:
                first, last = _ascii_word(f.first_name()), _ascii_word(f.last_name())
                return f"{first}.{last}+{_ascii_word(f.word())}@{f.domain_name()}"
            return str(f.email()).upper() if r < 0.9 else f"{f.user_name()}@mail.{f.domain_name()}"
        if etype == "PHONE_NUMBER":
            return str(self._faker().phone_number())
        if etype == "CREDIT_CARD":
            number = str(self._faker().credit_card_number())
            if r < 0.5:
                return number
            sep = " " if r < 0.8 else "-"
            if len(number) == 15:
                return sep.join([number[:4], number[4:10], number[10:]])
            return sep.join(number[i : i + 4] for i in range(0, len(number), 4))
        if etype == "US_SSN":
            ssn = str(self.fakers["en_US"].ssn())
            return ssn if r < 0.7 else ssn.replace("-", " ") if r < 0.9 else ssn.replace("-", "")
        if etype == "IBAN_CODE":
            iban = str(self._faker(IBAN_LOCALES).iban())
            return iban if r < 0.6 else " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        if etype == "IP_ADDRESS":
            f = self._faker()
            return str(f.ipv4()) if r < 0.4 else str(f.ipv4_private()) if r < 0.6 else str(f.ipv6())
        raise ValueError(etype)

    def sentence(self, etype: str) -> tuple[str, str]:
        value = self.value(etype)
        bare_ssn = etype == "US_SSN" and value.isdigit()
        # Bare 9-digit SSNs are ambiguous without context: such values always get a context template.
        if bare_ssn or self.rnd.random() < 0.6:
            template = self.rnd.choice(WITH_CONTEXT[etype])
        else:
            template = self.rnd.choice(NEUTRAL)
        return template, value

    def sample(self, n_entities: int) -> Sample:
        parts: list[str] = []
        gold: list[Gold] = []
        pos = 0
        for _ in range(n_entities):
            if self.rnd.random() < 0.5:
                filler = self.rnd.choice(FILLERS) + " "
                parts.append(filler)
                pos += len(filler)
            etype = self.rnd.choice(TYPES)
            template, value = self.sentence(etype)
            before, after = template.split("{}")
            gold.append(Gold(etype, pos + len(before), pos + len(before) + len(value)))
            chunk = before + value + after + " "
            parts.append(chunk)
            pos += len(chunk)
        if self.rnd.random() < 0.5:
            parts.append(self.rnd.choice(FILLERS))
        return Sample("".join(parts), gold)

    def samples(self, n: int) -> list[Sample]:
        return [self.sample(self.rnd.randint(1, 3)) for _ in range(n)]

    def random_pieces(self, text: str, max_piece: int = 8) -> list[str]:
        pieces: list[str] = []
        i = 0
        while i < len(text):
            k = self.rnd.randint(1, max_piece)
            pieces.append(text[i : i + k])
            i += k
        return pieces
