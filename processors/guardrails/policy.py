"""Guard policy: what to mask, flag or block, with thresholds, and per-tenant overrides.

A policy is a msgspec Struct so it can live in settings (JSON/YAML) and be validated on load: an unknown field or a
wrong type is an error at start-up, not a silently ignored rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from processors.guardrails.pii import CARD, EMAIL, IBAN, IP, PHONE, SSN

Action = Literal["block", "flag", "off"]
OutputAction = Literal["refuse", "flag", "off"]

DEFAULT_MASK = [EMAIL, PHONE, CARD, SSN, IBAN, IP]
DEFAULT_REFUSAL = "I can't answer that from the available sources."


class GuardPolicy(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One tenant's rules. Defaults are the safe ones: mask structured PII, block injection and toxicity."""

    # size limits, checked before any model runs
    max_chars: int = 8_000
    max_tokens: int = 2_048
    # share of control / replacement / private-use characters above which input is treated as binary garbage
    max_garbage_ratio: float = 0.2

    # PII: masked entities become <TYPE>; blocked ones reject the query; flagged ones are only reported.
    # Beyond the six defaults, PERSON, STREET_ADDRESS, DATE_OF_BIRTH and PASSPORT are options (measured precision in
    # benchmarks/guardrails/REPORT.md); in the output stream they are masked per complete sentence.
    mask_entities: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_MASK))
    block_entities: list[str] = msgspec.field(default_factory=list)
    flag_entities: list[str] = msgspec.field(default_factory=list)
    pii_threshold: float = 0.5

    # Scores at or above the threshold get the action; scores in [flag_threshold, threshold) are "flag, don't
    # block": the question goes on and the verdict records the reason (it travels on AnswerDone.input_verdict).
    injection_action: Action = "block"
    injection_threshold: float = 0.5
    injection_flag_threshold: float = 0.35
    toxicity_action: Action = "block"
    toxicity_threshold: float = 0.5
    toxicity_flag_threshold: float = 0.4

    # output (streaming) side
    output_toxicity_action: Action = "block"
    groundedness_action: OutputAction = "flag"
    groundedness_threshold: float = 0.5
    # "refuse" replaces the answer when more than this share of its sentences is ungrounded
    max_ungrounded_share: float = 0.34
    citation_action: Literal["flag", "off"] = "flag"
    refusal_text: str = DEFAULT_REFUSAL

    def pii_entities(self) -> list[str]:
        """Every entity type the analyzer must look for under this policy."""
        return sorted(set(self.mask_entities) | set(self.block_entities) | set(self.flag_entities))


class PolicyStore:
    """Default policy plus per-tenant overrides (only the fields that differ), merged and validated once."""

    def __init__(
        self, default: GuardPolicy | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        self.default = default or GuardPolicy()
        base = msgspec.to_builtins(self.default)
        self._tenants: dict[str, GuardPolicy] = {
            tenant: msgspec.convert({**base, **dict(fields)}, GuardPolicy)
            for tenant, fields in (overrides or {}).items()
        }

    def for_tenant(self, tenant: str) -> GuardPolicy:
        return self._tenants.get(tenant, self.default)

    @classmethod
    def from_json(cls, data: bytes | str) -> PolicyStore:
        """``{"default": {...}, "tenants": {"acme": {...}}}``; both parts optional."""
        raw = msgspec.json.decode(data, type=dict[str, Any])
        default = msgspec.convert(raw.get("default", {}), GuardPolicy)
        return cls(default, raw.get("tenants", {}))
