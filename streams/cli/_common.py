"""What every ``ragstream`` subcommand shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from infra.settings import Settings

if TYPE_CHECKING:
    from streams.clients.compacted_store import CompactedTopicStore

S = TypeVar("S", bound="CompactedTopicStore[Any]")
T = TypeVar("T")


def settings_or_exit() -> Settings:
    """The settings from the environment; a bad value ends the command with its reason (exit code 2)."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def with_registry(
    open_store: Callable[[Settings], S],
    action: Callable[[S], Awaitable[T]],
    *,
    what: str,
    refused: type[Exception],
    unreachable: tuple[type[Exception], ...],
) -> T:
    """Open a registry's store (it loads its topic), run ``action``, and end the command plainly: the registry's
    own refusal (``refused``) as its message, a Kafka that cannot be reached (``unreachable``) as a hint."""
    settings = settings_or_exit()

    async def main() -> T:
        async with open_store(settings) as store:
            return await action(store)

    try:
        return asyncio.run(main())
    except refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except unreachable as exc:
        typer.echo(f"error: cannot reach the {what} on Kafka ({exc}); is `ragstream up` running?", err=True)
        raise typer.Exit(1) from None
