"""``ragstream prompts ...``: list, show, register, promote and roll back prompt versions on the Kafka registry."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from streams.cli._common import with_registry

if TYPE_CHECKING:
    from streams.clients.prompt_store import KafkaPromptStore

T = TypeVar("T")

prompts_cli = typer.Typer(
    name="prompts", help="Versioned prompt templates (compacted Kafka topic).", no_args_is_help=True
)


def _run(action: Callable[[KafkaPromptStore], Awaitable[T]]) -> T:
    """Open the store (loads the topic, installs built-ins where absent), run ``action``, report errors plainly."""
    from processors.prompts.registry import PromptError
    from streams.clients.prompt_store import KafkaPromptStore

    return with_registry(
        KafkaPromptStore,
        action,
        what="prompt registry",
        refused=PromptError,
        unreachable=(OSError, RuntimeError, TimeoutError),
    )


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@prompts_cli.command("list")
def list_prompts() -> None:
    """Every prompt with its active version, version count and content hash."""

    async def action(store: KafkaPromptStore) -> list[str]:
        rows = [f"{'NAME':<24} {'ACTIVE':<7} {'VERSIONS':<9} {'HASH':<14} DESCRIPTION"]
        for name in store.state.names():
            active = store.state.active(name)
            versions = store.state.versions(name)
            rows.append(
                f"{name:<24} {active.version if active else '-':<7} {len(versions):<9} "
                f"{active.content_hash[:12] if active else '-':<14} {(active or versions[-1]).description}"
            )
        return rows

    for row in _run(action):
        typer.echo(row)


@prompts_cli.command()
def show(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    version: Annotated[str | None, typer.Option("--version", "-v", help="Version; default the active one.")] = None,
) -> None:
    """A prompt version's metadata and text."""

    async def action(store: KafkaPromptStore) -> str:
        template = store.get(name, version)
        active = store.state.active_version(name)
        header = [
            f"name:        {template.name}",
            f"version:     {template.version}{'  (active)' if template.version == active else ''}",
            f"sha256:      {template.content_hash}",
            f"created:     {_when(template.created_at)}",
            f"variables:   {', '.join(template.variables)}",
            f"description: {template.description}",
            f"history:     {' -> '.join(store.state.history(name)) or '-'}",
            "---",
        ]
        return "\n".join(header) + "\n" + template.template

    typer.echo(_run(action), nl=False)


@prompts_cli.command()
def register(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    file: Annotated[Path, typer.Argument(help="Template file ({{variable}} placeholders; optional header).")],
    description: Annotated[str | None, typer.Option(help="Overrides the file header's description.")] = None,
    promote: Annotated[bool, typer.Option(help="Make the new version active at once.")] = False,
) -> None:
    """Register a new version (identical text returns the existing version)."""
    from processors.prompts.registry import parse_template_file

    try:
        spec = parse_template_file(file.read_text("utf-8"))
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    async def action(store: KafkaPromptStore) -> str:
        template, created = await store.register(
            name,
            spec.template,
            description=spec.description if description is None else description,
            variables=spec.variables,
            promote=promote,
        )
        what = "registered" if created else "unchanged, identical to"
        active = store.state.active_version(name)
        return f"{what} {name}@{template.version} sha256 {template.content_hash[:12]} (active: {active or 'none'})"

    typer.echo(_run(action))


@prompts_cli.command()
def promote(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    version: Annotated[str, typer.Argument(help="Version to make active.")],
) -> None:
    """Make a version active; workers pick it up within about a second."""

    async def action(store: KafkaPromptStore) -> str:
        template = await store.promote(name, version)
        return f"{name}: active version {template.version} (history {' -> '.join(store.state.history(name))})"

    typer.echo(_run(action))


@prompts_cli.command()
def rollback(name: Annotated[str, typer.Argument(help="Prompt name.")]) -> None:
    """Return to the previously active version."""

    async def action(store: KafkaPromptStore) -> str:
        template = await store.rollback(name)
        return f"{name}: rolled back to version {template.version} (history {' -> '.join(store.state.history(name))})"

    typer.echo(_run(action))
