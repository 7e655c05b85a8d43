"""Shared fixtures for the guardrails tests: Faker values in many formats, seeded, never hard-coded results."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from faker import Faker

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "en_CA", "it_IT", "es_ES", "nl_NL", "en_AU", "en_IN"]


def _group(number: str, sep: str) -> str:
    if len(number) == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


@pytest.fixture
def pii_values() -> Callable[[int, int], list[tuple[str, str]]]:
    """``make(n, seed)`` -> n (entity_type, value) pairs across types, locales and formats."""

    def make(n: int, seed: int) -> list[tuple[str, str]]:
        rnd = random.Random(seed)
        fakers = {loc: Faker(loc) for loc in LOCALES}
        for i, f in enumerate(fakers.values()):
            f.seed_instance(seed + i)
        us = fakers["en_US"]
        out: list[tuple[str, str]] = []
        for k in range(n):
            f = fakers[rnd.choice(LOCALES)]
            kind = k % 6
            if kind == 0:
                out.append(("EMAIL_ADDRESS", f.email()))
            elif kind == 1:
                out.append(("PHONE_NUMBER", f.phone_number()))
            elif kind == 2:
                cc = f.credit_card_number()
                out.append(("CREDIT_CARD", rnd.choice([cc, _group(cc, " "), _group(cc, "-")])))
            elif kind == 3:
                ssn = us.ssn()
                out.append(("US_SSN", rnd.choice([ssn, ssn.replace("-", " ")])))
            elif kind == 4:
                iban = fakers[rnd.choice(["de_DE", "fr_FR", "en_GB", "es_ES", "nl_NL"])].iban()
                out.append(("IBAN_CODE", rnd.choice([iban, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))])))
            else:
                out.append(("IP_ADDRESS", rnd.choice([f.ipv4(), f.ipv6(), f.ipv4_private()])))
        return out

    return make
