"""The ``ragstream`` command: run the local stack, the worker, and talk to the pipeline."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, cast

import typer

from streams.cli._common import settings_or_exit
from streams.cli.eval import eval_cli
from streams.cli.finetune import finetune_cli
from streams.cli.prompts import prompts_cli

cli = typer.Typer(
    name="ragstream",
    help="Streaming RAG with guardrails on Kafka, Faust, Milvus, Redis and Triton.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.add_typer(prompts_cli, name="prompts")
cli.add_typer(eval_cli, name="eval")
cli.add_typer(finetune_cli, name="finetune")

ServiceNames = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services: kafka, redis, milvus, triton (the default set for up), worker, bridge, and observability "
        "(a Prometheus scraping the worker, the bridge and Triton), supervisor (restarts what dies)."
    ),
]


def _print_status(rows: list[tuple[str, str, str, str, str]]) -> None:
    typer.echo(f"{'SERVICE':<10} {'STATE':<10} {'PID':<8} {'ADDRESS':<28} DETAIL")
    for name, state, pid, address, detail in rows:
        typer.echo(f"{name:<10} {state:<10} {pid:<8} {address:<28} {detail}")


@cli.command()
def up(services: ServiceNames = None) -> None:
    """Start the local services (idempotent) and create the topics."""
    from infra.stack import ServiceError, Stack

    stack = Stack(settings_or_exit())
    try:
        statuses = stack.up(services or [])
    except ServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_status([(s.name, s.state, str(s.pid or "-"), s.address, s.detail) for s in statuses])


@cli.command("kafka-setup")
def kafka_setup() -> None:
    """Create the topics and, when Kafka security is on, every role's ACLs. Run as the Kafka admin (a super user);
    idempotent. Production runs it once per deployment (infra/deploy: the kafka-setup service / Job)."""
    from infra.kafka_admin import ensure_topics
    from infra.kafka_security import apply_acls, secured

    settings = settings_or_exit()

    async def run() -> tuple[list[str], int]:
        created = await ensure_topics(settings)
        return created, (await apply_acls(settings) if secured(settings) else 0)

    created, acls = asyncio.run(run())
    typer.echo(f"topics created: {len(created)} {' '.join(created)}".rstrip())
    typer.echo(f"ACL bindings applied: {acls}" if secured(settings) else "security off (PLAINTEXT): no ACLs")


@cli.command()
def down(services: ServiceNames = None) -> None:
    """Stop the local services by the PIDs recorded at start."""
    from infra.stack import Stack

    for name, stopped in Stack(settings_or_exit()).down(services or []):
        typer.echo(f"{name:<10} {'stopped' if stopped else 'was not running'}")


@cli.command()
def status(services: ServiceNames = None) -> None:
    """Health of each local service. Exit code 1 if an infrastructure service (or a named one) is not up."""
    from infra.stack import INFRASTRUCTURE, Stack

    statuses = Stack(settings_or_exit()).status(services or [])
    _print_status([(s.name, s.state, str(s.pid or "-"), s.address, s.detail) for s in statuses])
    required = set(services or INFRASTRUCTURE)
    if any(s.state != "up" for s in statuses if s.name in required):
        raise typer.Exit(1)


@cli.command()
def metrics(
    plot: Annotated[
        str | None, typer.Option(help="Also draw the key dashboard panels over the last --minutes into this PNG.")
    ] = None,
    minutes: Annotated[float, typer.Option(help="How far back the plot reaches.")] = 15.0,
    window: Annotated[str, typer.Option(help="Rate window standing in for Grafana's $__rate_interval.")] = "1m",
    end: Annotated[
        str | None, typer.Option(help="The plot ends here (ISO 8601, e.g. a benchmark's end); default: now.")
    ] = None,
) -> None:
    """The Grafana dashboard's on-call row, from the local Prometheus (`ragstream up observability`)."""
    from datetime import UTC, datetime
    from pathlib import Path

    from streams.clients.prometheus import PrometheusError, PrometheusQueries, oncall_row, plot_panels

    settings = settings_or_exit()
    queries = PrometheusQueries.local(settings)
    try:
        for title, value in oncall_row(queries, window=window):
            typer.echo(f"{title:<28} {value}")
        if plot:
            until = datetime.fromisoformat(end) if end else datetime.now(UTC)
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
            step = max(settings.prometheus_scrape_interval_s, minutes * 60 / 300)
            title = f"ragstream: {minutes:g} min to {until:%Y-%m-%d %H:%M} UTC ({window} rate window)"
            written = plot_panels(queries, Path(plot), minutes=minutes, window=window, step_s=step, title=title,
                                  end=until.timestamp())  # fmt: skip
            typer.echo(f"wrote {written}")
    except PrometheusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@cli.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Concurrent generations per worker (default: RAGSTREAM_GENERATE_CONCURRENCY).")
    ] = None,
    role: Annotated[
        str, typer.Option(help="all, or query / ingest to run the two paths as separate processes (see the docs).")
    ] = "all",
) -> None:
    """Run a Faust worker with the agents of its role (every agent by default)."""
    from streams.worker.agents import Role
    from streams.worker.main import run_worker

    if role not in ("all", "query", "ingest"):
        typer.echo(f"error: --role must be all, query or ingest, not {role!r}", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()
    if concurrency is not None:
        settings = settings.with_changes(generate_concurrency=concurrency)
    run_worker(settings, role=cast(Role, role))


@cli.command()
def supervise(
    services: ServiceNames = None,
    interval: Annotated[float, typer.Option(help="Seconds between checks.")] = 2.0,
    heartbeat: Annotated[str | None, typer.Option(help="File touched after every check (for `ragstream up`).")] = None,
) -> None:
    """Restart local services whose process died, until Ctrl-C or SIGTERM (all that run, or the named ones).
    `ragstream up supervisor` runs it in the background; `ragstream down NAME` keeps NAME stopped."""
    import logging
    import signal
    import threading
    from pathlib import Path

    from infra.stack import Stack
    from infra.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(name)s] %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    beat = (lambda: Path(heartbeat).touch()) if heartbeat else None
    Supervisor(Stack(settings_or_exit()), services or []).run(stop, interval_s=interval, heartbeat=beat)


@cli.command()
def bridge() -> None:
    """Run the WebSocket bridge on settings.host:bridge_port until SIGTERM (protocol: README.md)."""
    from streams.bridge.server import run_bridge

    run_bridge(settings_or_exit())


@cli.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files or directories (txt md rst html pdf); --delete: doc ids.")],
    tenant: Annotated[str, typer.Option(help="Tenant the documents belong to.")] = "default",
    prefix: Annotated[str, typer.Option(help="Prefix for doc ids.")] = "",
    root: Annotated[
        str | None, typer.Option(help="Doc ids are paths relative to this folder (default: each directory given).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Glob on the relative path to leave out (repeat).")] = None,
    default_excludes: Annotated[
        bool, typer.Option(help="Leave out Sphinx _sources/ copies and index pages (listed in the report).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Re-index unchanged files too (embeddings come from the cache).")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Delete the documents whose ids are given.")] = False,
    idle_timeout: Annotated[
        float, typer.Option(help="Give up when no acknowledgement arrived for this many seconds.")
    ] = 180.0,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds in all (default: no limit).")
    ] = None,
) -> None:
    """Send documents through Kafka to the indexer and wait until they are searchable."""
    from streams.clients import ingest as ingest_client

    settings = settings_or_exit()
    if delete:
        report = asyncio.run(ingest_client.delete(settings, tenant, paths, timeout_s=timeout or idle_timeout))
    else:
        patterns = (*(ingest_client.DEFAULT_EXCLUDES if default_excludes else ()), *(exclude or ()))
        run = ingest_client.ingest(
            settings, paths, tenant, prefix=prefix, root=root, exclude=patterns, force=force,
            idle_timeout_s=idle_timeout, timeout_s=timeout,
        )  # fmt: skip
        try:
            report = asyncio.run(run)
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(ingest_client.format_report(report), err=True)
    raise typer.Exit(0 if report.ok else 1)


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    tenant: Annotated[str, typer.Option(help="Tenant whose documents answer it.")] = "default",
    model: Annotated[str | None, typer.Option(help="Force a Triton model instead of the router's choice.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Skip the semantic cache.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait between events.")] = 120.0,
) -> None:
    """Ask a question through the whole pipeline over Kafka and stream the cited answer."""
    from schemas.events import AnswerDone, AnswerError, QueryOptions, TokenDelta
    from streams.clients.asker import KafkaAsker

    settings = settings_or_exit()

    async def run() -> int:
        async with KafkaAsker(settings) as asker:
            options = QueryOptions(model=model, use_cache=not no_cache)
            request_id = await asker.send(question, tenant=tenant, options=options)
            async for event in asker.events(request_id, timeout_s=timeout):
                if isinstance(event, TokenDelta):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, AnswerDone):
                    typer.echo("")
                    for c in event.citations:
                        where = " > ".join(p for p in (c.title, *c.heading_path) if p)
                        typer.echo(f"[{c.number}] {where} ({c.source_uri}#{c.char_start}-{c.char_end})")
                    origin = "cache" if event.cached else event.model or "-"
                    prompt = f"{event.prompt_ref.name}@{event.prompt_ref.version}" if event.prompt_ref else "-"
                    timings = ", ".join(f"{k}={v:.0f}ms" for k, v in event.timings_ms.items())
                    typer.echo(f"[{event.finish_reason}; {origin}; prompt {prompt}; {timings}]", err=True)
                    return 0
                elif isinstance(event, AnswerError):
                    typer.echo(f"\n[error {event.code} in {event.stage}: {event.message}]", err=True)
                    return 1
        return 1

    try:
        code = asyncio.run(run())
    except TimeoutError:
        typer.echo(f"no answer within {timeout:.0f}s: is a worker running (`ragstream up worker`)?", err=True)
        code = 1
    raise typer.Exit(code)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def capacity(ctx: typer.Context) -> None:
    """Plan GPU capacity for a model (KV cache, concurrency, tokens/s); --help for options."""
    from infra.capacity import main as capacity_main

    raise typer.Exit(capacity_main(list(ctx.args)))


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmarks and evaluation on one private stack, one report (benchmarks/run_all.py; --help, --quick)."""
    import subprocess

    from infra.settings import REPO_ROOT

    script = REPO_ROOT / "benchmarks" / "run_all.py"
    if not script.exists():  # the benchmarks ship with the source tree, not with the package
        typer.echo(f"{script} not found: run this from a source checkout", err=True)
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, str(script), *ctx.args]))


def main() -> None:
    cli()
