"""The ``ragstream`` command line: ``app`` holds the root commands, ``eval`` and ``prompts`` their groups."""

from streams.cli.app import main

__all__ = ["main"]
