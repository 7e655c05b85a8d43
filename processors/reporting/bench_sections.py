"""Markdown sections, figures and goal verdicts for the pipeline benchmarks (kinds "latency", "concurrency") and for
``benchmarks/run_all.py`` (kinds "goals", "benchmarks"). Registered with :mod:`processors.reporting.report`.

The goals are the issue's targets, each judged from the summaries that measure it: a goal no summary measured is
"not measured" (with the reason), never silently dropped, so a report with a missing part says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from processors.reporting.figures import pyplot, save_figure
from processors.reporting.markdown import Section, fmt, table

PREPARE_STAGES = ("input_guard", "embed", "cache_lookup", "retrieve", "rerank", "prompt")
STAGES = (*PREPARE_STAGES, "ttft_model", "generate")
PATHS = ("kafka", "inprocess")

GOAL_TTFT_MS = 500.0
GOAL_TOKENS_PER_S = 30.0
GOAL_OVERHEAD_P99_MS = 25.0
GOAL_OVERHEAD_RATE = 50.0
GOAL_CLIENTS = 1000
GOAL_GROUNDEDNESS = 0.9
# Issue 14, with the real CPU models over the WebSocket bridge at 1 q/s (the "interactive" part).
INTERACTIVE_MODEL = "llm_small"
GOAL_INTERACTIVE_RATE = 1.0
GOAL_INTERACTIVE_TTFT_MS = {"p50": 500.0, "p95": 800.0}
GOAL_MODEL_TOKENS_PER_S = {"llm_small": 30.0, "llm_large": 15.0}
GOAL_RERANK_MS = 60.0
GOAL_RETRIEVE_MS = 30.0
GOAL_RETRIEVE_CHUNKS = 20_000
# streams its prompt back at a fixed pace: its answers and decode speed say nothing about a model
PLUMBING_MODEL = "llm_echo"

Summary = Mapping[str, Any]


# --- goals -----------------------------------------------------------------------------------------------------


def goal(name: str, target: str, measured: str, met: bool | None, note: str = "") -> dict[str, Any]:
    """One row of the goals table; ``met`` None means not measured (``measured`` says why)."""
    return {"goal": name, "target": target, "measured": measured, "met": met, "note": note}


def _number(value: Any) -> float | None:
    """A summary's figure, or None when it is missing or NaN (no samples)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _ms(d: Mapping[str, Any], *keys: str) -> str:
    return " / ".join(fmt(d.get(k), 0) for k in keys) + " ms"


def ttft_goals(
    latency: Summary | None, concurrency: Summary | None, evaluation: Summary | None
) -> list[dict[str, Any]]:
    """Time to first token, from every part that measures it: a single request through Kafka (latency at its
    lowest rate), one WebSocket client (concurrency), and the eval's pipeline pass with its model."""
    name, target = "Time to first token", f"p95 < {GOAL_TTFT_MS:g} ms"
    sources: list[tuple[Mapping[str, Any], str]] = []  # (TTFT distribution, where it was measured)
    measured: Summary = latency or {}
    runs = [r for r in measured.get("runs", []) if r.get("kafka", {}).get("ttft_ms", {}).get("n")]
    if runs:
        low = min(runs, key=lambda r: r["rate"])
        where = f"Kafka path at {low['rate']:g} q/s, {low['kafka']['ttft_ms']['n']} answers"
        model = measured.get("model", PLUMBING_MODEL)
        sources.append((low["kafka"]["ttft_ms"], f"{where}, {model} (model time ~5 ms: this is prepare + bus)"))
    levels = [lv for lv in (concurrency or {}).get("levels", []) if lv.get("path") == "full" and lv["ttft_ms"]["n"]]
    if levels:
        first = min(levels, key=lambda lv: lv["clients"])
        sources.append(
            (first["ttft_ms"], f"{first['clients']} WebSocket client(s) at once through the bridge, full path")
        )
    if evaluation is not None and evaluation.get("latency_ms", {}).get("ttft", {}).get("n"):
        where = f"eval pipeline pass, model {evaluation.get('model') or 'default'}"
        sources.append(
            (evaluation["latency_ms"]["ttft"], f"{where}, {evaluation.get('concurrency')} questions in flight")
        )
    rows = []
    for d, where in sources:
        p95 = _number(d.get("p95"))
        met = None if p95 is None else p95 < GOAL_TTFT_MS
        rows.append(goal(name, target, f"{_ms(d, 'p50', 'p95')} (p50 / p95)", met, where))
    return rows or [goal(name, target, "not measured", None, "no part answered a question")]


def tokens_goal(evaluation: Summary | None) -> dict[str, Any]:
    """Decode speed per stream, from the eval's real model (the benchmarks' llm_echo has a fixed pace)."""
    name, target = "Tokens/s per stream", f"p50 > {GOAL_TOKENS_PER_S:g}"
    if evaluation is None:
        return goal(name, target, "not measured", None, "the eval did not run")
    model = str(evaluation.get("model") or "")
    d: Mapping[str, Any] = evaluation.get("decode_tokens_per_s") or {}
    if PLUMBING_MODEL in model:
        return goal(name, target, "not measured", None, f"the eval ran {PLUMBING_MODEL}, a fixed-pace stub")
    if not d.get("n"):
        return goal(name, target, "not measured", None, f"no answer of {model or 'the model'} was generated")
    p50 = d["p50"]
    return goal(
        name,
        target,
        f"{fmt(p50, 1)} tokens/s p50 (p95 {fmt(d.get('p95'), 1)})",
        p50 > GOAL_TOKENS_PER_S,
        f"decode speed as the worker timed it, model {model}, {d['n']} answers, "
        f"{evaluation.get('concurrency')} questions in flight",
    )


def overhead_goal(latency: Summary | None) -> dict[str, Any]:
    """Kafka/Faust overhead (total - stage compute) p99 at 50 q/s."""
    name, target = f"Kafka/Faust overhead at {GOAL_OVERHEAD_RATE:g} q/s", f"p99 <= {GOAL_OVERHEAD_P99_MS:g} ms"
    if latency is None:
        return goal(name, target, "not measured", None, "the latency benchmark did not run")
    runs = latency.get("runs", [])
    at = next((r for r in runs if r["rate"] == GOAL_OVERHEAD_RATE), None)
    if at is None:
        tried = ", ".join(f"{r['rate']:g}" for r in runs) or "none"
        return goal(name, target, "not measured", None, f"{GOAL_OVERHEAD_RATE:g} q/s was not run (rates: {tried})")
    kafka = at["kafka"]
    p99 = _number(kafka["overhead_ms"].get("p99"))
    if p99 is None:
        return goal(name, target, "not measured", None, f"no request was answered at {GOAL_OVERHEAD_RATE:g} q/s")
    note = (
        f"{GOAL_OVERHEAD_RATE:g} q/s {'was' if kafka['sustained'] else 'was NOT'} sustained "
        f"(completion {fmt(kafka['completion_rate'], 2)} q/s, {kafka['errors']} errors)"
    )
    if "inprocess" in at:
        note += (
            f"; in-process overhead p99 {fmt(at['inprocess']['overhead_ms'].get('p99'), 1)} ms, "
            f"total p99 Kafka / in-process {fmt(at['ratio']['total_p99'], 2)}x"
        )
    return goal(
        name,
        target,
        f"p99 {fmt(p99, 1)} ms (p50 {fmt(kafka['overhead_ms'].get('p50'), 1)})",
        p99 <= GOAL_OVERHEAD_P99_MS,
        note,
    )


def clients_goal(concurrency: Summary | None) -> dict[str, Any]:
    """1000 concurrent WebSocket clients held: every one connected and got, within the benchmark's bound, its own
    complete answer (``done``) or a clean error (an ``error`` event with its code, e.g. ``timeout`` when the deadline
    passed in a queue); none was left without either, none got another client's answer. Connections alone do not
    count. Summaries from before the error codes were recorded count only complete answers."""
    name = f"{GOAL_CLIENTS} concurrent WebSocket clients"
    target = "every client a complete answer or a clean error within the bound; 0 lost, 0 mixed-up"
    if concurrency is None:
        return goal(name, target, "not measured", None, "the concurrency benchmark did not run")
    levels = concurrency.get("levels", [])
    big = [lv for lv in levels if lv["clients"] >= GOAL_CLIENTS]
    if not big:
        largest = max(levels, key=lambda lv: lv["clients"], default=None)
        note = (
            f"largest level {largest['clients']} clients: {largest['connected']} connected, "
            f"{largest['mixed_up']} mixed-up"
            if largest
            else "no level ran"
        )
        return goal(name, target, "not measured", None, note)

    def errors(lv: dict[str, Any]) -> str:
        codes = lv.get("error_codes")
        return f"{lv['errors']} errors" + (f" ({', '.join(f'{c} {n}' for c, n in codes.items())})" if codes else "")

    def held(lv: dict[str, Any]) -> bool:
        if lv["connected"] != lv["clients"] or lv["mixed_up"] or lv["unfinished_at_timeout"]:
            return False
        codes = lv.get("error_codes")
        if codes is None:  # an older summary: errors of unknown kind
            return bool(lv["completed"] == lv["clients"])
        return "no error event" not in codes

    measured = "; ".join(
        f"{lv['path']}: {lv['connected']}/{lv['clients']} connected, {lv['mixed_up']} mixed-up, "
        f"{lv['completed']} complete answers, {errors(lv)}, {lv['unfinished_at_timeout']} unfinished"
        for lv in big
    )
    met = all(held(lv) for lv in big)
    note = f"bound {concurrency.get('timeout_s')} s; unfinished = neither a done nor an error event by then"
    if concurrency.get("request_timeout_s") is not None:
        note += f"; request deadline {concurrency['request_timeout_s']:g} s"
    return goal(name, target, measured, met, note)


def retrieval_goal(evaluation: Summary | None) -> dict[str, Any]:
    """hybrid+rerank nDCG@10 against dense-only and BM25-only, with the margins and the default it implies."""
    name, target = "Retrieval: hybrid+rerank nDCG@10", "beats dense-only and BM25-only"
    retrieval: Summary | None = (evaluation or {}).get("retrieval")
    if retrieval is None:
        return goal(name, target, "not measured", None, "the eval (with its retrieval comparison) did not run")
    judged: Summary = retrieval.get("verdict") or {}
    beats = judged.get("hybrid_rerank_beats_both")
    modes = retrieval.get("modes", {})
    if beats is None:
        return goal(name, target, "not measured", None, str(judged.get("verdict", "")))
    measured = (
        f"{fmt(modes['hybrid+rerank']['ndcg_at_10'])} vs dense {fmt(modes['dense']['ndcg_at_10'])} "
        f"({judged['margin_vs_dense']:+.3f}), BM25 {fmt(modes['bm25']['ndcg_at_10'])} "
        f"({judged['margin_vs_bm25']:+.3f}); {retrieval.get('cases')} cases"
    )
    return goal(name, target, measured, bool(beats), str(judged.get("recommendation", "")))


def groundedness_goal(evaluation: Summary | None) -> dict[str, Any]:
    """The seed's "> 90% factual correctness when grounded", measured by its proxy: mean groundedness."""
    name, target = "Groundedness (proxy for factual correctness)", f"mean >= {GOAL_GROUNDEDNESS:g}"
    if evaluation is None:
        return goal(name, target, "not measured", None, "the eval did not run")
    model = str(evaluation.get("model") or "")
    if PLUMBING_MODEL in model:
        return goal(name, target, "not measured", None, f"{PLUMBING_MODEL} repeats its prompt: trivially grounded")
    value = evaluation.get("quality", {}).get("groundedness")
    if value is None:
        return goal(name, target, "not measured", None, "no answerable question was answered")
    quality = evaluation["quality"]
    return goal(
        name,
        target,
        f"{fmt(value)} (pass rate {fmt(quality.get('pass_rate'))})",
        value >= GOAL_GROUNDEDNESS,
        f"share of answer sentences supported by the sources, model {model}",
    )


def _round(interactive: Summary | None, model: str) -> Summary | None:
    """The interactive part's round of ``model`` at the goals' rate, when it was answered at all."""
    rounds: Sequence[Summary] = (interactive or {}).get("rounds", [])
    at_rate = (r for r in rounds if r.get("model") == model and r.get("rate") == GOAL_INTERACTIVE_RATE)
    return next((r for r in at_rate if r.get("done")), None)


def interactive_goals(interactive: Summary | None) -> list[dict[str, Any]]:
    """Issue 14's goals that the interactive part measures: TTFT and decode speed with the real models over the
    bridge at 1 q/s, and the rerank and retrieve stages inside those answers (retrieve judged only at the goal's
    corpus size). Rounds at other rates are in the part's own section, not judged."""
    where = "the interactive part did not run"
    rounds: Sequence[Summary] = (interactive or {}).get("rounds", [])
    chunks = (interactive or {}).get("corpus", {}).get("chunks")
    if interactive is not None:
        where = (
            f"WebSocket bridge, {GOAL_INTERACTIVE_RATE:g} q/s, cache off, retrieve_k "
            f"{interactive.get('retrieve_k')}, rerank_k {interactive.get('rerank_k')}, {chunks} chunks"
        )

    def why_not(model: str) -> str:
        mine = [r for r in rounds if r.get("model") == model]
        if not mine:
            return f"{where}; {model} was not among this run's models"
        skipped = next((r["skipped"] for r in mine if "skipped" in r), "")
        return f"{where}; {skipped or f'no answer timed at {GOAL_INTERACTIVE_RATE:g} q/s'}"

    rows = []
    small = _round(interactive, INTERACTIVE_MODEL)
    name = f"Interactive TTFT, {INTERACTIVE_MODEL}"
    target = " and ".join(f"{k} < {v:g} ms" for k, v in GOAL_INTERACTIVE_TTFT_MS.items())
    ttft: Summary = (small or {}).get("ttft_ms", {})
    got = [(_number(ttft.get(k)), limit) for k, limit in GOAL_INTERACTIVE_TTFT_MS.items()]
    if small is None or any(value is None for value, _ in got):
        rows.append(goal(name, target, "not measured", None, why_not(INTERACTIVE_MODEL)))
    else:
        met = all(value is not None and value < limit for value, limit in got)
        prompt = fmt((small.get("prompt_tokens") or {}).get("p50"), 0)
        note = f"{where}; {small['done']}/{small['requests']} answered; prompt {prompt} tokens p50"
        rows.append(goal(name, target, f"{_ms(ttft, 'p50', 'p95')} (p50 / p95)", met, note))
    for model, floor in GOAL_MODEL_TOKENS_PER_S.items():
        name, target = f"Tokens/s per stream, {model}", f"p50 > {floor:g}"
        answered = _round(interactive, model)
        speed: Summary = (answered or {}).get("tokens_per_s") or {}
        p50 = _number(speed.get("p50"))
        if answered is None or p50 is None:
            rows.append(goal(name, target, "not measured", None, why_not(model)))
        else:
            note = f"{where}; decode speed as the worker timed it, {speed.get('n')} answers"
            rows.append(goal(name, target, f"{fmt(p50, 1)} tokens/s p50", p50 > floor, note))
    stages: Summary = (small or {}).get("stages_ms", {})
    rerank = _number((stages.get("rerank") or {}).get("p50"))
    name, target = "Rerank", f"p50 <= {GOAL_RERANK_MS:g} ms"
    if rerank is None:
        rows.append(goal(name, target, "not measured", None, why_not(INTERACTIVE_MODEL)))
    else:
        note = f"{where}; the retrieve_k candidates of each {INTERACTIVE_MODEL} answer"
        rows.append(goal(name, target, f"{fmt(rerank, 1)} ms p50", rerank <= GOAL_RERANK_MS, note))
    retrieve = _number((stages.get("retrieve") or {}).get("p50"))
    name, target = f"Retrieve at {GOAL_RETRIEVE_CHUNKS // 1000}k chunks", f"p50 <= {GOAL_RETRIEVE_MS:g} ms"
    if retrieve is None:
        rows.append(goal(name, target, "not measured", None, why_not(INTERACTIVE_MODEL)))
    elif not isinstance(chunks, int) or chunks < 0.9 * GOAL_RETRIEVE_CHUNKS:
        note = f"{where}: not the goal's size (benchmarks/pipeline/bench_retrieval.py searches 18.5k chunks)"
        rows.append(goal(name, target, f"{fmt(retrieve, 1)} ms p50 at {chunks} chunks", None, note))
    else:
        rows.append(goal(name, target, f"{fmt(retrieve, 1)} ms p50", retrieve <= GOAL_RETRIEVE_MS, where))
    return rows


def goals_summary(
    *,
    latency: Summary | None = None,
    concurrency: Summary | None = None,
    evaluation: Summary | None = None,
    interactive: Summary | None = None,
    complete: bool = False,
) -> dict[str, Any]:
    """The "goals" summary: a row per goal that the given summaries measure (``complete``: every goal, the
    missing ones as not measured, which is what the one-command run reports)."""
    rows: list[dict[str, Any]] = []
    if complete or latency is not None or concurrency is not None or evaluation is not None:
        rows += ttft_goals(latency, concurrency, evaluation)
    if complete or evaluation is not None:
        rows.append(tokens_goal(evaluation))
    if complete or latency is not None:
        rows.append(overhead_goal(latency))
    if complete or concurrency is not None:
        rows.append(clients_goal(concurrency))
    if complete or evaluation is not None:
        rows += [retrieval_goal(evaluation), groundedness_goal(evaluation)]
    if complete or interactive is not None:
        rows += interactive_goals(interactive)
    return {
        "kind": "goals",
        "title": "Goals",
        "rows": rows,
        "met": sum(1 for r in rows if r["met"] is True),
        "not_met": sum(1 for r in rows if r["met"] is False),
        "not_measured": sum(1 for r in rows if r["met"] is None),
    }


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("**MET**" if met else "**NOT MET**")


def goals_section(summary: Summary, out_dir: Path) -> Section:
    rows = summary.get("rows", [])
    section = Section(str(summary.get("title", "Goals")))
    section.lines += [
        f"{summary.get('met')} met, {summary.get('not_met')} not met, {summary.get('not_measured')} not measured.",
        "",
        *table(
            ["goal", "target", "measured", "verdict", "where / note"],
            [[r["goal"], r["target"], r["measured"], verdict(r["met"]), r["note"]] for r in rows],
        ),
    ]
    return section


# --- latency ---------------------------------------------------------------------------------------------------


def _dist(d: Mapping[str, Any] | None, digits: int = 1) -> str:
    d = d or {}
    return " / ".join(fmt(d.get(k), digits) for k in ("p50", "p95", "p99"))


def _rate_rows(runs: Sequence[Summary]) -> list[tuple[Summary, str, Summary]]:
    return [(run, path, run[path]) for run in runs for path in PATHS if path in run]


def _num(value: Any) -> float:
    """A plotted value: missing or NaN (no samples) is 0."""
    return _number(value) or 0.0


def memory_lines(summary: Summary) -> list[str]:
    """Each service's peak memory when the part ended (from ``service_memory``), if it was taken."""
    memory: Summary = summary.get("memory") or {}
    if not memory:
        return []
    peaks = ", ".join(f"{name} {fmt(row.get('peak_rss_mib'), 0)}" for name, row in memory.items())
    return ["", f"Peak RSS over each process lifetime (VmHWM summed over its process group) at the end, MiB: {peaks}."]


def latency_section(summary: Summary, out_dir: Path) -> Section:
    corpus: Summary = summary.get("corpus", {})
    runs: Sequence[Summary] = summary.get("runs", [])
    note = f"; {corpus['note']}" if "note" in corpus else ""
    # Summaries written before these fields existed: reranker on, the worker's fixed 8 / 32, an unlimited baseline.
    rerank = "on" if summary.get("rerank", True) else "off (fixed-cost stages)"
    prepare, generate = summary.get("prepare_concurrency"), summary.get("generate_concurrency")
    slots = (
        f"prepare concurrency {prepare}, generate {generate}; the in-process baseline has the same limits"
        if prepare is not None
        else "prepare concurrency 8, generate 32; the in-process baseline had no limit"
    )
    section = Section(str(summary.get("title", "Query latency")))
    lines = section.lines
    lines += [
        f"Corpus: {corpus.get('files')} pages of {corpus.get('dirs')} ({corpus.get('chunks')} chunks){note}. "
        f"Model: {summary.get('model')}, {summary.get('max_tokens')} tokens (5 ms each). Open-loop Poisson arrivals "
        f"of {summary.get('questions')} distinct FAQ questions. One `ragstream worker` ({slots}), "
        f"{summary.get('topic_partitions')} partitions, retrieve_k "
        f"{summary.get('retrieve_k')}, reranker {rerank}, rerank_k {summary.get('rerank_k')}. "
        f"Wall time {fmt(summary.get('wall_s'), 0)} s. "
        "All figures ms, p50 / p95 / p99; overhead = total - stage compute (every Kafka hop, Faust buffering and "
        "queue wait outside a stage).",
        "",
        *table(
            [
                "rate q/s",
                "path",
                "n",
                "errors",
                "completion q/s",
                "sustained",
                "TTFT",
                "total",
                "stage compute",
                "overhead",
                "TTFT overhead",
                "tokens/s p50",
            ],
            [
                [
                    f"{run['rate']:g}",
                    path,
                    r["requests"],
                    r["errors"],
                    r["completion_rate"],
                    f"{fmt(r['sustained'])} (x{fmt(r['backlog_growth'], 2)})",
                    _dist(r["ttft_ms"]),
                    _dist(r["total_ms"]),
                    _dist(r["stage_compute_ms"]),
                    _dist(r["overhead_ms"]),
                    _dist(r["ttft_overhead_ms"]),
                    fmt(r.get("tokens_per_s", {}).get("p50"), 0),
                ]
                for run, path, r in _rate_rows(runs)
            ],
        ),
        "",
        "Per-stage p50 / p99 (ms) as each stage timed itself:",
        "",
        *table(
            ["rate q/s", "path", *STAGES],
            [
                [f"{run['rate']:g}", path]
                + [f"{fmt(r['stages_ms'][k].get('p50'), 1)} / {fmt(r['stages_ms'][k].get('p99'), 1)}" for k in STAGES]
                for run, path, r in _rate_rows(runs)
            ],
        ),
    ]
    ratios = [run for run in runs if "ratio" in run]
    if ratios:
        lines += ["", "Bus cost (Kafka / in-process, same questions at the same arrival times):", ""]
        lines += table(
            ["rate q/s", "total p50", "total p99", "TTFT p50", "TTFT p99"],
            [
                [
                    f"{run['rate']:g}",
                    *(f"{fmt(run['ratio'][k], 2)}x" for k in ("total_p50", "total_p99", "ttft_p50", "ttft_p99")),
                ]
                for run in ratios
            ],
        )
    lines += ["", f"Max sustained rate (Kafka path, rates tried): {summary.get('max_sustained')}."]
    errors = [
        f"- {run['rate']:g} q/s {path}: {'; '.join(r['error_examples'])}"
        for run, path, r in _rate_rows(runs)
        if r.get("error_examples")
    ]
    if errors:
        lines += ["", "Errors (examples):", "", *errors]
    lines += memory_lines(summary)
    if runs:
        latency_plot(summary, out_dir / "latency_breakdown.png")
        section.figures.append(
            (
                "latency_breakdown.png",
                "Where the time goes (p50 per stage and overhead), and the overhead per offered rate against the goal",
            )
        )
    return section


def latency_plot(summary: Summary, path: Path) -> Path:
    plt = pyplot()
    runs: Sequence[Summary] = summary.get("runs", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    ticks: list[tuple[int, str]] = []
    for i, run in enumerate(runs):
        for j, name in enumerate(PATHS):
            r = run.get(name)
            if r is None:
                continue
            x = i * 3 + j
            first = not ticks
            ticks.append((x, f"{run['rate']:g}/s\n{name}"))
            bottom = 0.0
            for k, stage in enumerate((*PREPARE_STAGES, "generate")):
                value = _num(r["stages_ms"][stage].get("p50"))
                left.bar(x, value, bottom=bottom, color=f"C{k}", label=stage if first else None)
                bottom += value
            overhead = max(_num(r["overhead_ms"].get("p50")), 0.0)
            left.bar(x, overhead, bottom=bottom, color="black", alpha=0.6, label="overhead" if first else None)
    left.set_xticks([x for x, _ in ticks], [t for _, t in ticks], fontsize=8)
    left.set_ylabel("ms (p50 of each part)")
    left.set_title("Where the time goes (p50)")
    left.legend(fontsize=7)
    for key, style in (("p50", "o-"), ("p99", "s--")):
        for name, alpha in (("kafka", 1.0), ("inprocess", 0.6)):
            points = [(run["rate"], max(_num(run[name]["overhead_ms"].get(key)), 0.1)) for run in runs if name in run]
            if points:
                right.plot(*zip(*points, strict=True), style, alpha=alpha, label=f"{name} overhead {key}")
    right.axhline(GOAL_OVERHEAD_P99_MS, color="red", linestyle=":", label=f"goal p99 <= {GOAL_OVERHEAD_P99_MS:g} ms")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("offered queries/s")
    right.set_ylabel("ms")
    right.set_title("Overhead (total - stage compute)")
    right.legend(fontsize=7)
    return save_figure(fig, path)


# --- concurrency -----------------------------------------------------------------------------------------------


def concurrency_section(summary: Summary, out_dir: Path) -> Section:
    corpus: Summary = summary.get("corpus", {})
    levels: Sequence[Summary] = summary.get("levels", [])
    section = Section(str(summary.get("title", "Concurrent WebSocket clients")))
    lines = section.lines
    request_timeout = summary.get("request_timeout_s")
    deadline = (
        f", each request's deadline {fmt(request_timeout, 0)} s after it was asked (a request still queued then is "
        "answered with a timeout error)"
        if request_timeout is not None
        else ""
    )
    lines += [
        f"One bridge, one worker (generate concurrency 32), {summary.get('topic_partitions')} partitions, "
        f"bridge_max_connections {summary.get('bridge_max_connections')}, retrieve_k {summary.get('retrieve_k')} "
        f"(rerank_k {summary.get('rerank_k')}). Every client connects (loopback), then all ask one FAQ question at "
        f"the same moment; llm_echo, {summary.get('max_tokens')} tokens; each level is bounded at "
        f"{fmt(summary.get('timeout_s'), 0)} s (unfinished = neither a done nor an error event by then){deadline}. "
        f"Corpus: {corpus.get('dirs')}, "
        f"{corpus.get('files')} pages ({corpus.get('chunks')} chunks). Mixed-up = a message of another request on a "
        "client's socket, or tokens that do not join to its own done.text. Times ms, p50 / p95 / p99.",
        "",
        *table(
            [
                "clients",
                "path",
                "connected",
                "completed",
                "errors",
                "unfinished",
                "mixed-up",
                "wall s",
                "answers/s",
                "TTFT",
                "total",
            ],
            [
                [
                    lv["clients"],
                    lv["path"],
                    lv["connected"],
                    lv["completed"],
                    lv["errors"],
                    lv["unfinished_at_timeout"],
                    lv["mixed_up"],
                    lv["wall_s"],
                    lv["answers_per_s"],
                    _dist(lv["ttft_ms"], 0),
                    _dist(lv["total_ms"], 0),
                ]
                for lv in levels
            ],
        ),
    ]
    names = sorted({k for lv in levels for k in lv.get("peak_rss_mib", {})})
    if names:
        lines += ["", "Peak RSS sampled each second during each level (MiB; a service's whole process group):", ""]
        lines += table(
            ["clients", "path", *names],
            [[lv["clients"], lv["path"], *(fmt(lv["peak_rss_mib"].get(k), 0) for k in names)] for lv in levels],
        )
    lines += memory_lines(summary)
    examples = [
        f"- {lv['clients']} clients {lv['path']}, {label}: {'; '.join(lv[key])}"
        for lv in levels
        for label, key in (
            ("connect failures", "connect_failure_examples"),
            ("errors", "error_examples"),
            ("mixed-up", "mixed_examples"),
        )
        if lv.get(key)
    ]
    if examples:
        lines += ["", *examples]
    if levels:
        concurrency_plot(summary, out_dir / "concurrency.png")
        section.figures.append(("concurrency.png", "TTFT distribution per level, and peak memory per process"))
    return section


def concurrency_plot(summary: Summary, path: Path) -> Path:
    plt = pyplot()
    levels: Sequence[Summary] = summary.get("levels", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for lv in levels:
        values = lv.get("ttft_all_ms") or []
        if values:
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            marker = "o" if len(values) < 30 else None  # a level of one client is a single point
            left.plot(values, fractions, marker=marker, label=f"{lv['clients']} {lv['path']}")
    left.set_xscale("log")
    left.set_xlabel("TTFT ms (send -> first token at the client)")
    left.set_ylabel("fraction of answers")
    left.set_title("TTFT distribution")
    left.legend(fontsize=8)
    names = sorted({k for lv in levels for k in lv.get("peak_rss_mib", {})})
    width = 0.8 / max(1, len(levels))
    for j, lv in enumerate(levels):
        xs = [i + j * width for i in range(len(names))]
        right.bar(xs, [_num(lv["peak_rss_mib"].get(k)) for k in names], width, label=f"{lv['clients']} {lv['path']}")
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, fontsize=8)
    right.set_ylabel("peak RSS MiB")
    right.set_title("Memory per process (group)")
    right.legend(fontsize=8)
    return save_figure(fig, path)


# --- the one-command run ---------------------------------------------------------------------------------------


def interactive_section(summary: Summary, out_dir: Path) -> Section:
    corpus: Summary = summary.get("corpus", {})
    rounds: Sequence[Summary] = summary.get("rounds", [])
    section = Section(str(summary.get("title", "Interactive speed over the WebSocket bridge")))
    answered = [r for r in rounds if "skipped" not in r]
    # a stage no answer ran (the cache lookup with the cache off) gets no column
    stages = [s for s in STAGES if any(r["stages_ms"].get(s, {}).get("n") for r in answered)]
    section.lines += [
        "Each question from its own WebSocket client at the round's rate (Poisson), one model and rate at a "
        f"time; the whole path with the real model, cache off, the default RAG prompt (retrieve_k "
        f"{summary.get('retrieve_k')}, rerank_k {summary.get('rerank_k')}), greedy, at most "
        f"{summary.get('max_tokens')} tokens. Corpus: {corpus.get('dirs')}, {corpus.get('chunks')} chunks. TTFT is "
        "the client's (ask sent -> first token); tokens/s is the decode speed the worker timed; the stage columns "
        "are the worker's p50. Times ms, p50 / p95 / p99.",
        "",
        *table(
            [
                "model",
                "q/s",
                "answered",
                "errors",
                "TTFT",
                "total",
                "tokens/s p50 / p95",
                "prompt tokens p50",
                *(f"{s} p50" for s in stages),
            ],
            [
                [
                    r["model"],
                    fmt(r.get("rate"), 1),
                    f"{r['done']}/{r['requests']}",
                    r["errors"],
                    _dist(r["ttft_ms"], 0),
                    _dist(r["total_ms"], 0),
                    f"{fmt(r['tokens_per_s'].get('p50'), 1)} / {fmt(r['tokens_per_s'].get('p95'), 1)}",
                    fmt(r["prompt_tokens"].get("p50"), 0),
                    *(fmt(r["stages_ms"].get(s, {}).get("p50"), 1) for s in stages),
                ]
                for r in answered
            ],
        ),
    ]
    for r in rounds:
        if "skipped" in r:
            section.lines += ["", f"{r['model']}: skipped ({r['skipped']})."]
        elif r.get("error_examples"):
            section.lines += [
                "",
                f"{r['model']} at {fmt(r.get('rate'), 1)} q/s, errors: " + "; ".join(r["error_examples"]),
            ]
    section.lines += memory_lines(summary)
    return section


def run_section(summary: Summary, out_dir: Path) -> Section:
    """What the run was: the command, the stack, the corpus, and how long each part took (or why it failed)."""
    section = Section(str(summary.get("title", "Run")))
    stack: Summary = summary.get("stack", {})
    corpus: Summary = summary.get("corpus", {})
    section.lines += [
        f"Command: `{summary.get('command')}`. One private stack for every part ({stack.get('models')} in Triton, "
        f"{stack.get('topic_partitions')} partitions, search_mode {stack.get('search_mode')}, retrieve_k "
        f"{stack.get('retrieve_k')}, rerank_k {stack.get('rerank_k')}); corpus {corpus.get('dirs')}: "
        f"{corpus.get('files')} pages, {corpus.get('chunks')} chunks, ingested once through Kafka in "
        f"{fmt(corpus.get('seconds'), 0)} s, tenant `{summary.get('tenant')}`. Wall time "
        f"{fmt(summary.get('wall_s'), 0)} s.",
        "",
        *table(
            ["part", "seconds", "outcome"],
            [
                [name, fmt(part.get("seconds"), 0), part.get("error") or "ok"]
                for name, part in summary.get("parts", {}).items()
            ],
        ),
    ]
    return section
