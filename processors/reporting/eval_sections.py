"""Markdown sections and figures for the summaries ``ragstream eval`` (kinds "eval", "retrieval") and
``ragstream eval replay`` (kind "replay") write. Registered with :mod:`processors.reporting.report`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processors.reporting.figures import bar_chart, histograms
from processors.reporting.markdown import Section, fmt, table

RETRIEVAL_METRICS = ("ndcg_at_10", "recall_at_5", "recall_at_20", "mrr")
_LABELS = {
    "correctness": "correct when answered (key facts, no contradiction)",
    "answered_coverage": "answerable questions answered",
    "citation_precision": "citation precision (cited source supports the sentence)",
    "refusal_accuracy": "unanswerable questions refused",
    "false_refusal_rate": "answerable questions refused",
    "contradiction_rate": "answers with a contradicted sentence",
    "key_fact_recall": "key facts stated",
    "ndcg_at_10": "nDCG@10",
    "recall_at_5": "recall@5",
    "recall_at_20": "recall@20",
    "mrr": "MRR",
    "pass_rate": "pass rate",
    "groundedness": "groundedness",
    "answer_relevance": "answer relevance",
    "context_relevance": "context relevance",
    "answer_similarity": "answer similarity (cosine)",
    "answer_token_f1": "answer similarity (token F1)",
    "refusal_correctness": "refusal correctness",
    "citation_validity": "citation validity",
    "cited_share": "answers with citations",
    "error_rate": "error rate",
    "cached_share": "served from cache",
}


def label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def _percentile_rows(latency: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [name, stats.get("n"), stats.get("p50"), stats.get("p95"), stats.get("p99"), stats.get("mean")]
        for name, stats in latency.items()
        if isinstance(stats, Mapping)
    ]


def eval_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    quality: Mapping[str, Any] = summary.get("quality", {})
    section = Section(str(summary.get("title", "Evaluation")))
    section.lines += [
        f"Golden set `{summary.get('golden')}` on tenant `{summary.get('tenant')}`: {summary.get('cases')} cases "
        f"({summary.get('answerable')} answerable, {summary.get('refusal_expected')} expecting a refusal), "
        f"model `{summary.get('model') or 'default'}`, prompt version `{summary.get('prompt_version') or 'active'}`, "
        f"cache {'on' if summary.get('use_cache') else 'off'}; concurrency {summary.get('concurrency')}, "
        f"max tokens {summary.get('max_tokens') or 'default'}; "
        f"the pipeline pass took {fmt(summary.get('duration_s'), 1)} s.",
        "",
        *(
            [
                "`llm_echo` streams its own input back (a plumbing model): the answer-quality figures below measure "
                "the harness, not answers; retrieval, refusal-gate and latency figures stand.",
                "",
            ]
            if "llm_echo" in str(summary.get("model"))
            else []
        ),
        "### Answer quality",
        "",
        *table(["metric", "value"], [[label(k), v] for k, v in quality.items()]),
        "",
    ]
    section.lines += [
        f"Correct: an answered, answerable case with key facts ({summary.get('with_key_facts')} cases have them) "
        "whose answer states every key fact and none of whose sentences the passages it was built from contradict "
        f"(claim checker `{summary.get('checker') or '?'}`). Retrieval and these checks use the passages each answer "
        "carried, not a second search.",
        "",
    ]
    thresholds: Mapping[str, Any] = summary.get("thresholds", {})
    if thresholds:
        section.lines += [
            "A case passes when refusal is expected and the pipeline refused, or when it is answerable and the "
            f"answer is not a refusal, groundedness >= {fmt(thresholds.get('groundedness'), 2)} (sentence support "
            f">= {fmt(thresholds.get('sentence_support'), 2)}), cosine similarity to the reference >= "
            f"{fmt(thresholds.get('similarity'), 2)}, every citation is valid, and (with key facts) it is correct.",
            "",
        ]
    refusals: Mapping[str, Any] = summary.get("refusals", {})
    if refusals:
        section.lines += ["### Refusals", "", *table(["outcome", "cases"], list(refusals.items())), ""]
    latency: Mapping[str, Any] = summary.get("latency_ms", {})
    if latency:
        rows = _percentile_rows(latency)
        decode: Mapping[str, Any] = summary.get("decode_tokens_per_s") or {}
        if decode.get("n"):
            rows += _percentile_rows({"decode tokens/s per stream": decode})
        section.lines += [
            "### Latency (client-observed through Kafka, ms; decode speed as the worker timed it)",
            "",
            *table(["measure", "n", "p50", "p95", "p99", "mean"], rows),
            "",
        ]
    by_tag: Mapping[str, Any] = summary.get("by_tag", {})
    if by_tag:
        rows = [[tag, v.get("cases"), v.get("pass_rate"), v.get("correctness")] for tag, v in sorted(by_tag.items())]
        section.lines += [
            "### By tag",
            "",
            *table(["tag", "cases", "pass rate", "correct when answered"], rows),
            "",
        ]
    dist: Mapping[str, Any] = summary.get("distributions", {})
    keys = ("groundedness", "answer_similarity", "answer_relevance", "context_relevance")
    if any(dist.get(k) for k in keys):
        histograms(
            out_dir / "quality_distributions.png",
            {label(k): dist.get(k, []) for k in keys},
            title="Per-case answer quality",
            bins=10,
            unit=True,
        )
        section.figures.append(("quality_distributions.png", "Distribution of per-case quality scores"))
    if dist.get("ttft_ms") or dist.get("total_ms"):
        histograms(
            out_dir / "latency.png",
            {"TTFT (ms)": dist.get("ttft_ms", []), "total (ms)": dist.get("total_ms", [])},
            title="Latency",
        )
        section.figures.append(("latency.png", "Client-observed time to first token and total time"))
    headline = [
        k
        for k in (
            "correctness",
            "answered_coverage",
            "citation_precision",
            "refusal_accuracy",
            "false_refusal_rate",
            "pass_rate",
            "refusal_correctness",
            "citation_validity",
            "groundedness",
            "answer_similarity",
            "answer_relevance",
            "context_relevance",
        )
        if quality.get(k) is not None
    ]
    if headline:
        bar_chart(
            out_dir / "quality.png",
            [label(k) for k in headline],
            {"score": [quality[k] for k in headline]},
            title="Answer quality (means)",
            ylabel="score",
        )
        section.figures.append(("quality.png", "Answer quality: pass rate and mean scores"))
    return section


MATRIX_COLUMNS = (
    ("correctness", "correct when answered"),
    ("answered_coverage", "answered"),
    ("citation_precision", "citation precision"),
    ("refusal_accuracy", "refusal accuracy"),
    ("false_refusal_rate", "false refusals"),
    ("pipeline_recall_at_5", "recall@5"),
    ("ttft_ms_p50", "TTFT p50 ms"),
    ("decode_tokens_per_s_p50", "tokens/s p50"),
)


def matrix_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    """Configurations side by side: the headline of each run, its details in the sections that follow."""
    rows: list[Mapping[str, Any]] = summary.get("rows", [])
    section = Section(str(summary.get("title", "Models and strategies")))
    section.lines += [
        f"Golden set `{summary.get('golden')}`, the same cases for every configuration, one after another in this "
        "run. Correct when answered: key facts stated and no sentence contradicted by the passages the answer was "
        "built from; answered: the share of answerable questions that got an answer.",
        "",
        *table(
            ["model", "strategy", *(title for _, title in MATRIX_COLUMNS), "cases"],
            [
                [r.get("model"), r.get("strategy"), *(r.get(key) for key, _ in MATRIX_COLUMNS), r.get("cases")]
                for r in rows
            ],
        ),
        "",
    ]
    if rows:
        names = [f"{r.get('model')} / {r.get('strategy')}" for r in rows]
        bar_chart(
            out_dir / "matrix.png",
            names,
            {title: [r.get(key) for r in rows] for key, title in MATRIX_COLUMNS[:5]},
            title="Answer quality by model and strategy",
            ylabel="share",
        )
        section.figures.append(
            ("matrix.png", "Correctness, coverage, citation precision and refusals per configuration")
        )
    return section


def retrieval_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    modes: Mapping[str, Mapping[str, Any]] = summary.get("modes", {})
    section = Section(str(summary.get("title", "Retrieval comparison")))
    section.lines += [
        f"{summary.get('cases')} cases with known relevant spans. `pipeline`: the ranking each answer carried (what "
        f"the pipeline retrieved and reranked for it, {summary.get('pipeline_mode')} mode); the other modes: top "
        f"{summary.get('top_k')} searched directly in Milvus (same tenant, same index); rerank = the Triton reranker "
        "over that mode's top-k. A chunk is relevant when it overlaps the golden answer span of the same document.",
        "",
        *table(
            ["mode", *[label(m) for m in RETRIEVAL_METRICS], "search p50 ms"],
            [[mode, *[v.get(m) for m in RETRIEVAL_METRICS], v.get("latency_ms_p50")] for mode, v in modes.items()],
        ),
        "",
    ]
    judged: Mapping[str, Any] = summary.get("verdict") or {}
    if judged.get("verdict"):
        section.lines += [f"**{judged['verdict']}**", ""]
    recommendation = judged.get("recommendation")
    if recommendation:
        section.lines += [f"Recommendation: {recommendation}", ""]
    gate: Mapping[str, Any] | None = summary.get("refusal_gate")
    if gate:
        ans, ooc = gate.get("answerable_top_score", {}), gate.get("out_of_corpus_top_score", {})
        section.lines += [
            "### Refusal gate (top reranker score)",
            "",
            f"The pipeline refuses without a model call when the best {gate.get('mode')} score is below "
            f"min_relevance = {fmt(gate.get('min_relevance'), 2)}. Answerable questions: min {fmt(ans.get('low'))}, "
            f"p10 {fmt(ans.get('middle'))}, median {fmt(ans.get('high'))}; out-of-corpus questions: median "
            f"{fmt(ooc.get('low'))}, p90 {fmt(ooc.get('middle'))}, max {fmt(ooc.get('high'))}. Decisions right at "
            f"the current threshold: {fmt(gate.get('accuracy_at_min_relevance'))}; best threshold on this set "
            f"{fmt(gate.get('best_threshold'))} with {fmt(gate.get('best_accuracy'))} right (fitted on the same "
            "cases it is scored on: a starting point, not a validated setting).",
            "",
        ]
    if modes:
        names = list(modes)
        bar_chart(
            out_dir / "retrieval.png",
            names,
            {label(m): [modes[n].get(m) for n in names] for m in RETRIEVAL_METRICS},
            title="Retrieval by mode",
            ylabel="score",
        )
        section.figures.append(("retrieval.png", "nDCG@10, recall@5, recall@20 and MRR per retrieval mode"))
    return section


def replay_section(summary: Mapping[str, Any], out_dir: Path) -> Section:
    section = Section(str(summary.get("title", "Replay")))
    base: Mapping[str, Any] = summary.get("baseline", {})
    cand: Mapping[str, Any] = summary.get("candidate", {})
    window: Mapping[str, Any] = summary.get("window", {})
    section.lines += [
        f"{summary.get('requests')} recorded requests from `{window.get('topic')}` "
        f"({window.get('description', '')}), each re-issued twice in this run: baseline = the recorded options "
        f"(model `{base.get('model') or 'as recorded'}`, prompt `{base.get('prompt_version') or 'as recorded'}`), "
        f"candidate = model `{cand.get('model') or 'as recorded'}`, prompt "
        f"`{cand.get('prompt_version') or 'as recorded'}`. Cache {'on' if summary.get('use_cache') else 'off'}.",
        "",
    ]
    for key, title in (
        ("answers", "Answers"),
        ("refusals", "Refusals"),
        ("citations", "Citations"),
        ("errors", "Errors"),
    ):
        part: Mapping[str, Any] = summary.get(key, {})
        if part:
            section.lines += [
                f"### {title}",
                "",
                *table(["measure", "value"], [[label(k), v] for k, v in part.items()]),
                "",
            ]
    latency: Mapping[str, Any] = summary.get("latency_ms", {})
    if latency:
        rows = []
        for measure, parts in latency.items():
            b = parts.get("baseline", {})
            c = parts.get("candidate", {})
            rows.append(
                [
                    measure,
                    b.get("p50"),
                    c.get("p50"),
                    parts.get("delta_p50"),
                    b.get("p95"),
                    c.get("p95"),
                    parts.get("delta_mean"),
                ]
            )
        section.lines += [
            "### Latency (ms, client-observed)",
            "",
            *table(
                [
                    "measure",
                    "baseline p50",
                    "candidate p50",
                    "Δ p50",
                    "baseline p95",
                    "candidate p95",
                    "mean Δ (paired)",
                ],
                rows,
            ),
            "",
        ]
    dist: Mapping[str, Any] = summary.get("distributions", {})
    if any(dist.values()):
        histograms(
            out_dir / "replay.png",
            {
                "answer similarity": dist.get("similarity", []),
                "TTFT Δ (ms)": dist.get("ttft_delta_ms", []),
                "total Δ (ms)": dist.get("total_delta_ms", []),
            },
            title="Candidate vs baseline",
        )
        section.figures.append(
            ("replay.png", "Per-request answer similarity and latency deltas (candidate - baseline)")
        )
    return section
