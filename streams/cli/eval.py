"""``ragstream eval``: evaluate the pipeline on a golden set, build golden sets, replay traffic, combine reports.

ragstream eval --golden benchmarks/eval/golden/python_faq.jsonl --tenant pyfaq [--limit 40] [--no-cache]
ragstream eval build-golden [--faq-dir DIR] [--out FILE]
ragstream eval replay --since 2h [--until ...] --prompt-version v2 [--model llm_large]
ragstream eval report RESULTS_DIR_OR_SUMMARY_JSON ... --out DIR
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from infra.settings import REPO_ROOT
from streams.cli._common import settings_or_exit

GOLDEN_FAQ = REPO_ROOT / "benchmarks" / "eval" / "golden" / "python_faq.jsonl"

eval_cli = typer.Typer(
    help="Evaluate the pipeline on a golden set (default command), build golden sets, replay traffic.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@eval_cli.callback()
def run(
    ctx: typer.Context,
    golden: Annotated[Path, typer.Option(help="Golden set (.jsonl) or a text file of questions.")] = GOLDEN_FAQ,
    tenant: Annotated[str, typer.Option(help="Tenant whose index the questions are asked against.")] = "default",
    limit: Annotated[int | None, typer.Option(help="Evaluate N cases, spread over the set.")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Model to answer with (default: the router's choice); repeat to compare.")
    ] = None,
    strategy: Annotated[
        list[str] | None, typer.Option(help="Answer strategy: generate, gated or extractive; repeat to compare.")
    ] = None,
    checker: Annotated[str, typer.Option(help="Claim checker for correctness: lexical.")] = "lexical",
    prompt_version: Annotated[str | None, typer.Option(help="Prompt version (default: the active one).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the semantic cache.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length limit.")] = None,
    concurrency: Annotated[int, typer.Option(help="Cases in flight at once.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 120.0,
    min_groundedness: Annotated[float, typer.Option(help="Pass threshold for groundedness.")] = 0.5,
    min_similarity: Annotated[float, typer.Option(help="Pass threshold for cosine similarity to the reference.")] = 0.5,
    ingest: Annotated[
        list[Path] | None, typer.Option(help="Ingest these files/directories into the tenant first (skips unchanged).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Results root (default benchmarks/results/eval).")] = None,
    compare_modes: Annotated[
        bool,
        typer.Option(
            "--compare-modes/--no-compare-modes",
            help="Also search every retrieval mode directly in Milvus and compare them (slow on a big set).",
        ),
    ] = True,
) -> None:
    """Run the golden set through the real pipeline and write the report (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from processors.evaluation.metrics import PassRule
    from streams.clients.evaluation import DEFAULT_OUT, EvalConfig, run_eval, run_matrix

    settings = settings_or_exit()
    if ingest:
        from streams.clients import ingest as ingest_client

        report = asyncio.run(ingest_client.ingest(settings, [str(p) for p in ingest], tenant))
        typer.echo(ingest_client.format_report(report), err=True)
        if not report.ok:
            raise typer.Exit(1)
    config = EvalConfig(
        golden=golden,
        tenant=tenant,
        limit=limit,
        model=model[0] if model else None,
        strategy=strategy[0] if strategy else None,
        checker=checker,
        prompt_version=prompt_version,
        use_cache=not no_cache,
        max_tokens=max_tokens,
        concurrency=concurrency,
        timeout_s=timeout,
        rule=PassRule(groundedness=min_groundedness, similarity=min_similarity),
        out_root=out or DEFAULT_OUT,
        retrieval=compare_modes,
    )
    if len(model or ()) > 1 or len(strategy or ()) > 1:
        models: list[str | None] = list(model) if model else [None]
        strategies: list[str | None] = list(strategy) if strategy else [None]
        folder = asyncio.run(run_matrix(settings, config, models, strategies))
    else:
        folder = asyncio.run(run_eval(settings, config))
    typer.echo((folder / "summary.md").read_text())
    from processors.reporting.figures import INSTALL_HINT, available

    if not available():
        typer.echo(f"figures were skipped (matplotlib is not installed): {INSTALL_HINT}", err=True)
    if every_case_failed(json.loads((folder / "summary.json").read_text())):
        typer.echo("every case failed: is `ragstream worker` running?", err=True)
        raise typer.Exit(1)


def every_case_failed(summary: Mapping[str, Any]) -> bool:
    """Whether no case of any configuration got an answer (a matrix's summary nests one run per configuration)."""
    if summary.get("kind") != "eval_matrix":
        return bool(summary["quality"]["error_rate"] == 1.0)
    runs = [value for key, value in summary.items() if key.startswith("run_") and isinstance(value, Mapping)]
    return all(run["quality"]["error_rate"] == 1.0 for run in runs)


@eval_cli.command("build-golden")
def build_golden(
    faq_dir: Annotated[Path, typer.Option(help="Folder of FAQ HTML pages.")] = Path(
        "/usr/share/doc/python3.11/html/faq"
    ),
    corpus_root: Annotated[
        Path | None, typer.Option(help="Folder you ingest; doc ids are relative to it (default: FAQ folder's parent).")
    ] = None,
    prefix: Annotated[str, typer.Option(help="The --prefix given to `ragstream ingest`.")] = "",
    out: Annotated[Path, typer.Option(help="Where to write the JSONL golden set.")] = GOLDEN_FAQ,
) -> None:
    """Build the development golden set from the Python FAQ pages, plus the out-of-corpus questions."""
    from processors.evaluation.golden import build_faq_golden, write_golden

    cases = build_faq_golden(faq_dir, corpus_root=corpus_root, prefix=prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = write_golden(cases, out)
    refusals = sum(1 for c in cases if c.expect_refusal)
    typer.echo(f"{count} cases ({count - refusals} FAQ questions, {refusals} out-of-corpus) -> {out}")


@eval_cli.command("replay")
def replay(
    since: Annotated[str | None, typer.Option(help="Window start: ISO 8601, Unix seconds, or an age (2h).")] = None,
    until: Annotated[str | None, typer.Option(help="Window end (default: now).")] = None,
    offsets: Annotated[
        str | None, typer.Option(help="Instead of times: PARTITION:FIRST-END,... (END optional).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Candidate model.")] = None,
    prompt_version: Annotated[str | None, typer.Option(help="Candidate prompt version.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's requests.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N recorded requests (the earliest).")] = None,
    use_cache: Annotated[bool, typer.Option("--use-cache", help="Let both sides use the semantic cache.")] = False,
    include_synthetic: Annotated[
        bool, typer.Option("--include-synthetic", help="Also replay requests made by eval runs and replays.")
    ] = False,
    concurrency: Annotated[int, typer.Option(help="Recorded requests in flight at once.")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 120.0,
    out: Annotated[Path | None, typer.Option(help="Results root (default benchmarks/results/replay).")] = None,
) -> None:
    """Re-run recorded query traffic with another model and/or prompt version and report the differences."""
    from processors.evaluation.replay import parse_offsets, parse_when
    from streams.clients.replay import DEFAULT_OUT, ReplayConfig, run_replay

    if model is None and prompt_version is None:
        typer.echo("give --model and/or --prompt-version: the candidate to compare with the recorded options", err=True)
        raise typer.Exit(2)
    if (since is None) == (offsets is None):
        typer.echo("give either --since (a time window) or --offsets", err=True)
        raise typer.Exit(2)
    try:
        config = ReplayConfig(
            since=parse_when(since) if since is not None else None,
            until=parse_when(until) if until is not None else None,
            offsets=parse_offsets(offsets) if offsets is not None else None,
            limit=limit,
            tenant=tenant,
            model=model,
            prompt_version=prompt_version,
            use_cache=use_cache,
            include_synthetic=include_synthetic,
            concurrency=concurrency,
            timeout_s=timeout,
            out_root=out or DEFAULT_OUT,
        )
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    folder = asyncio.run(run_replay(settings_or_exit(), config))
    typer.echo((folder / "summary.md").read_text())


@eval_cli.command("report")
def report(
    inputs: Annotated[list[Path], typer.Argument(help="Results folders or summary JSON files (any kind).")],
    out: Annotated[Path, typer.Option(help="Folder for the combined summary.md and figures.")],
    title: Annotated[str, typer.Option(help="Report title.")] = "ragstream benchmarks and evaluation",
) -> None:
    """Combine summary JSONs (eval, replay, and benchmark kinds) into one Markdown report with figures."""
    from processors.reporting.figures import FiguresUnavailable
    from processors.reporting.report import nested_summaries, write_report

    summaries: list[Mapping[str, Any]] = []
    for path in inputs:
        file = path / "summary.json" if path.is_dir() else path
        data = json.loads(file.read_text())
        for item in data if isinstance(data, list) else [data]:
            summaries.extend(nested_summaries(item))
    try:
        written = write_report(out, title, summaries, figure_mode="required")
    except FiguresUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {written}")
