"""Versioned prompt templates and the registry state machine, with no Kafka in sight.

A template names its variables explicitly and marks them ``{{name}}``. Rendering substitutes declared variables in
one pass over the *template*, so braces, ``{{...}}`` or ``%s`` inside a question or a retrieved passage are copied
verbatim and never interpreted (``str.format`` on untrusted text would raise or leak attributes).

The registry is rebuilt by applying records in topic order (the worker's Kafka prompt store). Records are keyed so log
compaction keeps what matters: ``name@version`` for each immutable version, ``name`` for the active pointer. The
pointer record carries the full stack of previously active versions, so the latest pointer alone (all compaction
leaves) reconstructs rollback history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from schemas.events import (
    Passage,
    PromptPromoted,
    PromptRecord,
    PromptRef,
    PromptRegistered,
    PromptRolledBack,
    now,
)

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
INTENTS = ("factual", "how-to", "comparison", "troubleshooting", "chit-chat", "out-of-scope")
# Rollback depth kept in the pointer record; bounds the record's size.
MAX_HISTORY = 50

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptError(ValueError):
    """A registry operation that cannot be done; the message says why (shown as is by the CLI)."""


class PromptRenderError(PromptError):
    """Rendering with missing or undeclared variables."""


def content_hash(template: str) -> str:
    """sha256 hex of the template text: what PromptRef records and what dedupe compares."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def placeholders(template: str) -> list[str]:
    """Variable names used as ``{{name}}`` in ``template``, in first-use order."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise PromptError(f"invalid prompt name {name!r}: letters, digits, '_', '.', '-' (no '@'), at most 100")
    return name


class PromptTemplate(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable prompt version."""

    name: str
    version: str
    template: str
    content_hash: str
    created_at: float
    description: str = ""
    variables: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        name: str,
        version: str,
        template: str,
        *,
        description: str = "",
        variables: Iterable[str] | None = None,
        created_at: float | None = None,
    ) -> PromptTemplate:
        """Build and check a template: declared variables and ``{{...}}`` placeholders must match exactly."""
        validate_name(name)
        used = placeholders(template)
        declared = tuple(dict.fromkeys(variables)) if variables is not None else tuple(used)
        bad = [v for v in declared if not _VARIABLE.match(v)]
        if bad:
            raise PromptError(f"invalid variable names {bad}")
        undeclared = sorted(set(used) - set(declared))
        if undeclared:
            raise PromptError(f"template {name!r} uses undeclared variables {undeclared}")
        unused = sorted(set(declared) - set(used))
        if unused:
            raise PromptError(f"template {name!r} declares variables it never uses {unused}")
        return cls(
            name=name,
            version=version,
            template=template,
            content_hash=content_hash(template),
            created_at=now() if created_at is None else created_at,
            description=description,
            variables=declared,
        )

    @property
    def ref(self) -> PromptRef:
        """What the answer event records."""
        return PromptRef(name=self.name, version=self.version, content_hash=self.content_hash)

    def render(self, values: Mapping[str, str] | None = None, /, **kwargs: str) -> str:
        """Substitute every declared variable; missing or unknown names raise :class:`PromptRenderError`.

        Values are inserted literally in one pass, so a value containing ``{{question}}`` stays as it is.
        """
        given: dict[str, str] = {**(values or {}), **kwargs}
        missing = [v for v in self.variables if v not in given]
        unknown = sorted(set(given) - set(self.variables))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing variables {missing}")
            if unknown:
                parts.append(f"undeclared variables {unknown}")
            raise PromptRenderError(f"cannot render {self.name}@{self.version}: {'; '.join(parts)}")
        return _PLACEHOLDER.sub(lambda m: str(given[m.group(1)]), self.template)


def format_sources(passages: Sequence[Passage]) -> str:
    """Number passages ``[1]``, ``[2]``, ... (the numbers the answer cites), each with its title and heading."""
    blocks = []
    for number, passage in enumerate(passages, start=1):
        where = " > ".join(part for part in (passage.title, *passage.heading_path) if part)
        header = f"[{number}] {where}".rstrip()
        blocks.append(f"{header}\n{passage.text.strip()}")
    return "\n\n".join(blocks)


def parse_intent(output: str) -> str:
    """The intent label in a classifier's output; ``out-of-scope`` when the model said something else."""
    words: list[str] = re.findall(r"[a-z]+(?:-[a-z]+)*", output.lower())
    for word in words[:3]:
        if word in INTENTS:
            return word
        if word in {"howto", "how"}:
            return "how-to"
    return "out-of-scope"


# --- template files --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateFile:
    """A template file: an optional ``key: value`` header (description, variables) closed by a ``---`` line."""

    template: str
    description: str = ""
    variables: tuple[str, ...] | None = None


def parse_template_file(text: str) -> TemplateFile:
    lines = text.splitlines(keepends=True)
    separator = next((i for i, line in enumerate(lines) if line.strip() == "---"), None)
    header: dict[str, str] = {}
    if separator is not None and all(":" in line or not line.strip() for line in lines[:separator]):
        for line in lines[:separator]:
            if line.strip():
                key, _, value = line.partition(":")
                header[key.strip().lower()] = value.strip()
        body = "".join(lines[separator + 1 :])
    else:
        body = text
    variables = None
    if "variables" in header:
        variables = tuple(v.strip() for v in header["variables"].split(",") if v.strip())
    return TemplateFile(
        template=body.strip("\n") + "\n", description=header.get("description", ""), variables=variables
    )


def builtin_templates(folder: Path = BUILTIN_DIR) -> dict[str, TemplateFile]:
    """The prompts shipped with ragstream (``<name>.txt``), registered as version "1" where absent."""
    return {path.stem: parse_template_file(path.read_text("utf-8")) for path in sorted(folder.glob("*.txt"))}


# --- registry --------------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    versions: dict[str, PromptTemplate] = field(default_factory=dict)
    # Activation stack: history[-1] is active; rollback pops it.
    history: list[str] = field(default_factory=list)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


class PromptRegistryState:
    """The registry as a deterministic function of the records applied, in topic order.

    Same key, last record wins (exactly what compaction keeps), so replaying a compacted topic gives the same state
    as having followed the live one. ``plan_*`` methods validate an operation and return the record to write; they
    never change the state, which only :meth:`apply` does.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    # reading
    def names(self) -> list[str]:
        return sorted(self._entries)

    def versions(self, name: str) -> list[PromptTemplate]:
        """Every registered version, oldest first."""
        entry = self._entries.get(name)
        if entry is None:
            return []
        return [entry.versions[v] for v in sorted(entry.versions, key=_version_key)]

    def get(self, name: str, version: str) -> PromptTemplate | None:
        entry = self._entries.get(name)
        return entry.versions.get(version) if entry else None

    def active_version(self, name: str) -> str | None:
        entry = self._entries.get(name)
        return entry.history[-1] if entry and entry.history else None

    def active(self, name: str) -> PromptTemplate | None:
        version = self.active_version(name)
        return self.get(name, version) if version is not None else None

    def resolve(self, name: str, version: str | None = None) -> PromptTemplate:
        """A specific version, or the active one when ``version`` is None (``QueryOptions.prompt_version``);
        :class:`PromptError` says which is missing."""
        if version is None:
            template = self.active(name)
            if template is None:
                raise PromptError(f"prompt {name!r} has no active version")
            return template
        found = self.get(name, version)
        if found is None:
            raise PromptError(f"prompt {name!r} has no version {version!r}")
        return found

    def history(self, name: str) -> list[str]:
        """Versions in activation order, oldest first; the last is active, rollback returns to the one before."""
        entry = self._entries.get(name)
        return list(entry.history) if entry else []

    def find_by_hash(self, name: str, digest: str) -> PromptTemplate | None:
        return next((t for t in self.versions(name) if t.content_hash == digest), None)

    # changing
    def apply(self, record: PromptRecord) -> None:
        if isinstance(record, PromptRegistered):
            entry = self._entries.setdefault(record.name, _Entry())
            entry.versions[record.version] = PromptTemplate(
                name=record.name,
                version=record.version,
                template=record.template,
                content_hash=record.content_hash,
                created_at=record.created_at,
                description=record.description,
                variables=tuple(record.variables),
            )
        else:  # the pointer records carry the whole stack: idempotent, and enough after compaction
            entry = self._entries.setdefault(record.name, _Entry())
            history = list(record.history) or [record.version]
            if history[-1] != record.version:
                history.append(record.version)
            entry.history = history

    def apply_all(self, records: Iterable[PromptRecord]) -> PromptRegistryState:
        for record in records:
            self.apply(record)
        return self

    def install_builtins(self, templates: Mapping[str, TemplateFile] | None = None) -> list[PromptTemplate]:
        """Register and activate each shipped prompt where the registry has no version of it, in memory; returns
        what was installed. The Kafka store writes the same records to its topic instead."""
        installed = []
        for name, spec in (builtin_templates() if templates is None else templates).items():
            if self.versions(name):
                continue
            record, template = self.plan_register(
                name, spec.template, description=spec.description, variables=spec.variables
            )
            if record is not None:
                self.apply(record)
            promoted = self.plan_promote(name, template.version)
            if promoted is not None:
                self.apply(promoted)
            installed.append(template)
        return installed

    def plan_register(
        self, name: str, template: str, *, description: str = "", variables: Iterable[str] | None = None
    ) -> tuple[PromptRegistered | None, PromptTemplate]:
        """``(record, template)`` for a new version, or ``(None, existing)`` when the same text is registered."""
        candidate = PromptTemplate.create(name, "0", template, description=description, variables=variables)
        existing = self.find_by_hash(name, candidate.content_hash)
        if existing is not None:
            return None, existing
        numbers = [int(t.version) for t in self.versions(name) if t.version.isdigit()]
        version = str(max(numbers, default=0) + 1)
        record = PromptRegistered(
            name=name,
            version=version,
            template=candidate.template,
            content_hash=candidate.content_hash,
            description=description,
            variables=list(candidate.variables),
        )
        return record, msgspec.structs.replace(candidate, version=version, created_at=record.created_at)

    def plan_promote(self, name: str, version: str) -> PromptPromoted | None:
        """The pointer record making ``version`` active; None when it already is."""
        if self.get(name, version) is None:
            known = [t.version for t in self.versions(name)]
            raise PromptError(f"prompt {name!r} has no version {version!r} (known: {known or 'none'})")
        history = self.history(name)
        if history and history[-1] == version:
            return None
        history = [*history, version][-MAX_HISTORY:]
        return PromptPromoted(name=name, version=version, history=history)

    def plan_rollback(self, name: str) -> PromptRolledBack:
        """The pointer record returning to the previously active version."""
        history = self.history(name)
        if len(history) < 2:
            raise PromptError(f"prompt {name!r} has no previously active version to roll back to")
        return PromptRolledBack(name=name, version=history[-2], rolled_back_from=history[-1], history=history[:-1])


def record_key(record: PromptRecord) -> str:
    """The Kafka key: ``name@version`` for content (kept forever by compaction), ``name`` for the pointer."""
    if isinstance(record, PromptRegistered):
        return f"{record.name}@{record.version}"
    return record.name
