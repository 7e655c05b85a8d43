"""What a search costs, and what BM25 keyword queries change: each golden question searched through the worker's
own ``MilvusIndex`` (tenant filter, live-version check, Redis round trips included), one at a time, with the BM25
half given the whole question and then the question without its function words (``processors.words``).

Both variants run in the same process, against the same index, alternating per question, so load and caches fall
on both alike. Quality is judged against the golden set's relevant spans (nDCG@10, recall@20, as in the eval
report), on each search's own order and, for hybrid, after the Triton reranker has reordered its top ``--top-k`` as
the worker does (the ranking answers are built from; its time is not in the search figures).

    PYTHONPATH=$PWD python benchmarks/pipeline/bench_retrieval.py \\
        --golden benchmarks/eval/golden/python_docs.jsonl --tenant pydocs

Needs a running stack (``ragstream up``) with the golden set's corpus indexed under ``--tenant``; settings come from
the environment like every ``ragstream`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from infra.settings import Settings
from processors.evaluation.golden import load_golden
from processors.evaluation.metrics import percentile, retrieval_scores
from processors.protocols import SearchMode
from processors.reporting.machine import describe_machine, load_average, run_facts
from streams.clients.evaluation import EvalClients

VARIANTS = ("whole question", "keywords")


async def main(args: argparse.Namespace) -> dict[str, object]:
    settings = Settings.from_env()
    facts = run_facts()
    cases = [c for c in load_golden(args.golden) if c.relevant]
    clients = EvalClients(settings)  # the worker's own Milvus index, embedder and reranker, as the eval uses them
    index = clients.index
    try:
        vectors = await clients.embedder.embed([c.question for c in cases])
        await index.ensure_collection()
        for i, case in enumerate(cases[:3]):  # warm the connections and the server's caches before timing
            await index.search(args.tenant, case.question, vectors[i].tolist(), args.top_k, "hybrid")
        ms: dict[tuple[str, str], list[float]] = {}
        ndcg: dict[tuple[str, str], list[float]] = {}
        recall: dict[tuple[str, str], list[float]] = {}
        rerank_ms: list[float] = []
        modes: tuple[SearchMode, ...] = ("bm25", "hybrid")
        for i, case in enumerate(cases):
            for mode in modes:
                # alternate which variant goes first, so neither always finds the server warmer
                for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                    index.keyword_queries = variant == "keywords"
                    started = time.perf_counter()
                    ranked = await index.search(args.tenant, case.question, vectors[i].tolist(), args.top_k, mode)
                    ms.setdefault((mode, variant), []).append((time.perf_counter() - started) * 1000.0)
                    scores = retrieval_scores(ranked, case.relevant)
                    ndcg.setdefault((mode, variant), []).append(scores.ndcg_at_10 or 0.0)
                    recall.setdefault((mode, variant), []).append(scores.recall_at_20 or 0.0)
                    if mode == "hybrid" and ranked:
                        started = time.perf_counter()
                        reranked = await clients.reranker.rerank(case.question, ranked, len(ranked))
                        rerank_ms.append((time.perf_counter() - started) * 1000.0)
                        ndcg.setdefault(("hybrid+rerank", variant), []).append(
                            retrieval_scores(reranked, case.relevant).ndcg_at_10 or 0.0
                        )
        rows = [
            {
                "mode": mode,
                "bm25_query": variant,
                "p50_ms": round(statistics.median(ms[mode, variant]), 1),
                "p95_ms": round(percentile(ms[mode, variant], 95) or 0.0, 1),
                "ndcg_at_10": round(statistics.fmean(ndcg[mode, variant]), 3),
                "recall_at_20": round(statistics.fmean(recall[mode, variant]), 3),
                "reranked_ndcg_at_10": (
                    round(statistics.fmean(ndcg["hybrid+rerank", variant]), 3) if mode == "hybrid" else None
                ),
            }
            for mode in modes
            for variant in VARIANTS
        ]
        chunks = (await clients.milvus.get_collection_stats(index.collection))["row_count"]
    finally:
        await clients.close()
    return {**facts, "load_at_end": load_average(), "golden": str(args.golden), "cases": len(cases),
            "tenant": args.tenant, "top_k": args.top_k, "collection_rows": chunks, "rows": rows,
            "rerank_p50_ms": round(statistics.median(rerank_ms), 1) if rerank_ms else None}  # fmt: skip


def _markdown(result: dict[str, object]) -> str:
    machine = result["machine"]
    assert isinstance(machine, dict)
    lines = [
        f"{result['started_at']}, commit {result['git_commit']}, {describe_machine(machine)}; load at the end "
        f"{result['load_at_end']}; {result['cases']} cases of "
        f"{result['golden']}, {result['collection_rows']} rows in the collection, top {result['top_k']}, one search "
        "at a time",
        "",
        "| mode | BM25 query | p50 ms | p95 ms | nDCG@10 | recall@20 | nDCG@10 reranked |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    assert isinstance(rows, list)
    lines += [
        f"| {r['mode']} | {r['bm25_query']} | {r['p50_ms']} | {r['p95_ms']} | {r['ndcg_at_10']} | {r['recall_at_20']} "
        f"| {r['reranked_ndcg_at_10'] if r['reranked_ndcg_at_10'] is not None else ''} |"
        for r in rows
    ]
    lines += ["", f"Triton reranker over each hybrid list (top {result['top_k']}): p50 {result['rerank_p50_ms']} ms"]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, default=Path("benchmarks/eval/golden/python_docs.jsonl"))
    parser.add_argument("--tenant", default="pydocs")
    parser.add_argument("--top-k", type=int, default=20, help="passages per search (the worker's retrieve_k)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    if arguments.out:
        arguments.out.write_text(json.dumps(outcome, indent=2))
    print(_markdown(outcome))
