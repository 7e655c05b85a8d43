"""What every ``ragstream`` subcommand shares."""

from __future__ import annotations

import typer

from infra.settings import Settings


def settings_or_exit() -> Settings:
    """The settings from the environment; a bad value ends the command with its reason (exit code 2)."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
