"""The prompt stage: the registry's RAG template rendered with the numbered sources and the question."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from processors.query.context import Context
from schemas.events import PromptRef


class _Template(Protocol):
    @property
    def ref(self) -> PromptRef: ...

    def render(self, values: dict[str, str] | None = None, /, **kwargs: str) -> str: ...


class TemplatePrompts:
    """A :class:`~processors.protocols.PromptProvider` over a registry's ``get(name, version)`` (default
    ``rag_qa``): the template is rendered with ``sources`` and ``question``."""

    def __init__(self, get: Callable[[str, str | None], _Template], name: str = "rag_qa") -> None:
        self.get = get
        self.name = name

    def render_rag(self, question: str, context: Context, version: str | None = None) -> tuple[str, PromptRef]:
        template = self.get(self.name, version)
        return template.render(sources=context.text, question=question), template.ref
