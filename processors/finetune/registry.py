"""Versioned LoRA adapters per tenant, and which one each tenant's answers use: the registry state machine.

Adapters are versioned like prompts (:mod:`processors.prompts.registry`): each registered version is immutable
(``tenant@version``: the weights' sha256, the base model, the data and config they came from, and the gate's
evaluation report), and a per-tenant pointer says which version is active, carrying the whole stack of previously
promoted versions so the latest pointer alone (all that compaction keeps) reconstructs rollback history. The empty
version ``""`` is the base model without adapter: a tenant starts there, and rolling back its first adapter returns
there.

Promotion goes through the gate: a version whose report does not say ``promote`` (or has no report) is refused,
unless the operator forces it, so a worse adapter never becomes active by accident. ``plan_*`` methods validate and
return the record to write; only :meth:`AdapterRegistryState.apply` changes the state (in topic order, last record
per key wins).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.events import (
    AdapterPromoted,
    AdapterRecord,
    AdapterRef,
    AdapterRegistered,
    AdapterRolledBack,
)
from schemas.finetune import AdapterEvalReport

BASE = ""  # the active "version" of a tenant without adapter
MAX_HISTORY = 50
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class AdapterError(ValueError):
    """A registry operation that cannot be done; the message says why (shown as is by the CLI)."""


def validate_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise AdapterError(f"invalid tenant {tenant!r}: letters, digits, '_', '.', '-', at most 100")
    return tenant


@dataclass
class _Tenant:
    versions: dict[str, AdapterRegistered] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # promoted versions, oldest first; [-1] active, [] = base


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


class AdapterRegistryState:
    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    # reading
    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def versions(self, tenant: str) -> list[AdapterRegistered]:
        entry = self._tenants.get(tenant)
        if entry is None:
            return []
        return [entry.versions[v] for v in sorted(entry.versions, key=_version_key)]

    def get(self, tenant: str, version: str) -> AdapterRegistered | None:
        entry = self._tenants.get(tenant)
        return entry.versions.get(version) if entry else None

    def history(self, tenant: str) -> list[str]:
        entry = self._tenants.get(tenant)
        return list(entry.history) if entry else []

    def active_version(self, tenant: str) -> str:
        """The active version, or :data:`BASE` (``""``) when the tenant answers with the base model."""
        history = self.history(tenant)
        return history[-1] if history else BASE

    def active(self, tenant: str) -> AdapterRegistered | None:
        """The active adapter's record; None for the base model."""
        version = self.active_version(tenant)
        return self.get(tenant, version) if version != BASE else None

    def active_ref(self, tenant: str) -> AdapterRef | None:
        """What an answer records as the adapter that produced it (None: the base model)."""
        record = self.active(tenant)
        return record.adapter if record is not None else None

    def find_by_hash(self, tenant: str, content_hash: str) -> AdapterRegistered | None:
        return next((r for r in self.versions(tenant) if r.adapter.content_hash == content_hash), None)

    # changing
    def apply(self, record: AdapterRecord) -> None:
        entry = self._tenants.setdefault(record.tenant, _Tenant())
        if isinstance(record, AdapterRegistered):
            entry.versions[record.adapter.version] = record
            return
        history = [v for v in record.history if v != BASE]
        if record.version != BASE and (not history or history[-1] != record.version):
            history.append(record.version)
        entry.history = history

    def apply_all(self, records: Iterable[AdapterRecord]) -> AdapterRegistryState:
        for record in records:
            self.apply(record)
        return self

    def plan_register(
        self,
        tenant: str,
        *,
        content_hash: str,
        base_model: str,
        path: str,
        data_hash: str = "",
        config_hash: str = "",
        report: AdapterEvalReport | None = None,
        run_id: str = "",
    ) -> tuple[AdapterRegistered | None, AdapterRegistered]:
        """``(record, registered)`` for a new version (next number), or ``(None, existing)`` for the same weights."""
        validate_tenant(tenant)
        if len(content_hash) != 64:
            raise AdapterError(f"content hash must be a sha256 hex digest, got {content_hash!r}")
        existing = self.find_by_hash(tenant, content_hash)
        if existing is not None:
            return None, existing
        numbers = [int(r.adapter.version) for r in self.versions(tenant) if r.adapter.version.isdigit()]
        version = str(max(numbers, default=0) + 1)
        ref = AdapterRef(
            name=tenant,
            version=version,
            content_hash=content_hash,
            base_model=base_model,
            data_hash=data_hash,
            config_hash=config_hash,
        )
        record = AdapterRegistered(tenant=tenant, adapter=ref, path=path, report=report, run_id=run_id)
        return record, record

    def plan_promote(self, tenant: str, version: str, *, force: bool = False) -> AdapterPromoted | None:
        """The pointer record making ``version`` active; None when it already is. Refused when the version's gate
        report does not say it beats the base (``force`` overrides, for an operator who knows better)."""
        record = self.get(tenant, version)
        if record is None:
            known = [r.adapter.version for r in self.versions(tenant)]
            raise AdapterError(f"tenant {tenant!r} has no adapter version {version!r} (known: {known or 'none'})")
        if not force:
            if record.report is None:
                raise AdapterError(f"{tenant}@{version} has no evaluation report: the gate cannot promote it")
            if not record.report.promote:
                why = "; ".join(record.report.reasons) or "the gate refused it"
                raise AdapterError(f"{tenant}@{version} does not beat the base model: {why}")
        history = self.history(tenant)
        if history and history[-1] == version:
            return None
        return AdapterPromoted(tenant=tenant, version=version, history=[*history, version][-MAX_HISTORY:])

    def plan_rollback(self, tenant: str) -> AdapterRolledBack:
        """The pointer record returning to the previously active version, or to the base model after the first."""
        history = self.history(tenant)
        if not history:
            raise AdapterError(f"tenant {tenant!r} already answers with the base model: nothing to roll back")
        rest = history[:-1]
        return AdapterRolledBack(
            tenant=tenant, version=rest[-1] if rest else BASE, rolled_back_from=history[-1], history=rest
        )


def record_key(record: AdapterRecord) -> str:
    """The Kafka key: ``tenant@version`` for a version (kept by compaction), ``tenant`` for the pointer."""
    if isinstance(record, AdapterRegistered):
        return f"{record.tenant}@{record.adapter.version}"
    return record.tenant
