"""``ragstream finetune ...``: train a tenant's LoRA adapter, gate it against the base model, and manage which adapter
each tenant's answers use (list, promote, rollback)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from streams.cli._common import settings_or_exit, with_registry

if TYPE_CHECKING:
    from schemas.events import FinetuneProgress
    from streams.clients.adapter_store import KafkaAdapterStore

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GOLDEN = REPO_ROOT / "benchmarks" / "eval" / "golden" / "python_docs.jsonl"

finetune_cli = typer.Typer(
    name="finetune",
    help="LoRA adapters per tenant: train, gate against the base model, promote, roll back.",
    no_args_is_help=True,
)


def _registry(action: Callable[[KafkaAdapterStore], Awaitable[T]]) -> T:
    from aiokafka.errors import KafkaError

    from processors.finetune.registry import AdapterError
    from streams.clients.adapter_store import KafkaAdapterStore

    return with_registry(
        KafkaAdapterStore,
        action,
        what="adapter registry",
        refused=AdapterError,
        unreachable=(OSError, RuntimeError, TimeoutError, KafkaError),
    )


class _Display:
    """A progress bar per phase on a terminal, a line per phase change (and every 10 steps) otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"), transient=False,
            )  # fmt: skip
            self.progress.start()

    def __call__(self, event: FinetuneProgress) -> None:
        detail = ""
        if event.loss is not None:
            detail = f"loss {event.loss:.3f}, {(event.step_ms or 0) / 1000:.2f} s/step"
        elif event.message:
            detail = event.message[:80]
        if self.progress is not None and event.total_steps:
            task = self.tasks.get(event.phase)
            if task is None:
                task = self.progress.add_task(event.phase, total=event.total_steps, detail="")
                self.tasks[event.phase] = task
            self.progress.update(task, completed=event.step, detail=detail)
            return
        if self.progress is not None:
            self.progress.console.print(f"[{event.phase}] {detail}")
        elif not event.total_steps or event.step % 10 == 0 or event.step == event.total_steps:
            step = f" {event.step}/{event.total_steps}" if event.total_steps else ""
            typer.echo(f"[{event.phase}]{step} {detail}", err=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@finetune_cli.command("run")
def run(
    tenant: Annotated[str, typer.Option(help="The tenant whose adapter is trained.")],
    golden: Annotated[Path | None, typer.Option(help="The tenant's golden questions (JSONL).")] = DEFAULT_GOLDEN,
    corpus: Annotated[
        list[Path] | None, typer.Option(help="The tenant's documents (files or folders), as ingested; repeatable.")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="Doc ids relative to this folder (as `ragstream ingest --root`).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="FinetuneConfig as JSON (missing fields: defaults).")] = None,
    threads: Annotated[int, typer.Option(help="torch threads for training and answering (0: torch's default).")] = 0,
    promote: Annotated[bool, typer.Option(help="Promote the adapter when the gate passes it.")] = True,
) -> None:
    """Build the training set, train a LoRA adapter, answer the held-out split with base and adapter, gate,
    register (and promote when it beats the base). Progress and result go to the finetune topic; the report to
    <data dir>/finetune/<tenant>/<stamp>/report.md."""
    from aiokafka.errors import KafkaError

    from processors.evaluation.golden import load_golden
    from processors.finetune.registry import AdapterError, validate_tenant
    from schemas.finetune import FinetuneConfig, load_config
    from streams.clients.finetune import FinetuneError, corpus_passages, run_finetune

    settings = settings_or_exit()
    try:
        validate_tenant(tenant)
        settings_config = load_config(config.read_bytes()) if config else FinetuneConfig().validate()
        cases = load_golden(golden) if golden else []
        passages = corpus_passages(corpus, tenant=tenant, root=root) if corpus else []
    except (AdapterError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(cases)} golden cases, {len(passages)} chunks from the corpus", err=True)
    display = _Display()
    try:
        outcome = asyncio.run(
            run_finetune(
                settings,
                tenant,
                settings_config,
                golden=cases,
                passages=passages,
                threads=threads,
                promote=promote,
                on_progress=display,
            )
        )
    except FinetuneError as exc:
        display.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, RuntimeError, TimeoutError, KafkaError) as exc:
        display.close()
        typer.echo(f"error: {exc}; is `ragstream up kafka` running?", err=True)
        raise typer.Exit(1) from None
    display.close()
    result = outcome.result
    adapter = f"{result.adapter.name}@{result.adapter.version}" if result.adapter else "-"
    typer.echo(f"{result.decision}: adapter {adapter}")
    for reason in result.reasons:
        typer.echo(f"  - {reason}")
    typer.echo(f"report: {outcome.run_dir / 'report.md'}")


@finetune_cli.command("list")
def list_adapters(tenant: Annotated[str | None, typer.Argument(help="One tenant; default all.")] = None) -> None:
    """Every registered adapter version per tenant, its gate verdict, and which one is active."""

    async def action(store: KafkaAdapterStore) -> list[str]:
        rows = [f"{'TENANT':<20} {'VERSION':<8} {'ACTIVE':<7} {'GATE':<9} {'SHA256':<14} PATH"]
        for name in [tenant] if tenant else store.state.tenants():
            active = store.state.active_version(name)
            for record in store.state.versions(name):
                gate = "-" if record.report is None else ("pass" if record.report.promote else "refused")
                rows.append(
                    f"{name:<20} {record.adapter.version:<8} {'*' if record.adapter.version == active else '':<7} "
                    f"{gate:<9} {record.adapter.content_hash[:12]:<14} {record.path}"
                )
            if not active:
                rows.append(f"{name:<20} {'base':<8} {'*':<7}")
        return rows

    for row in _registry(action):
        typer.echo(row)


@finetune_cli.command()
def promote(
    tenant: Annotated[str, typer.Argument(help="Tenant.")],
    version: Annotated[str, typer.Argument(help="Adapter version to make active.")],
    force: Annotated[bool, typer.Option(help="Promote although the gate did not pass it.")] = False,
) -> None:
    """Make an adapter version active for a tenant (refused unless its gate report passed, or --force)."""

    async def action(store: KafkaAdapterStore) -> str:
        ref = await store.promote(tenant, version, force=force)
        history = " -> ".join(store.state.history(tenant))
        return f"{tenant}: active adapter {ref.version if ref else 'base'} (history {history or '-'})"

    typer.echo(_registry(action))


@finetune_cli.command()
def rollback(tenant: Annotated[str, typer.Argument(help="Tenant.")]) -> None:
    """Return the tenant to its previously active adapter, or to the base model after its first."""

    async def action(store: KafkaAdapterStore) -> str:
        ref = await store.rollback(tenant)
        history = " -> ".join(store.state.history(tenant))
        now = f"adapter {ref.version}" if ref else "the base model"
        return f"{tenant}: rolled back to {now} (history {history or '-'})"

    typer.echo(_registry(action))
