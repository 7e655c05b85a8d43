"""How long the reranker's passages need to be, and how it should weigh its two views: ranking quality and time of
the CPU reranker per ``max_length`` and ``alpha`` (the pooled cosine's share; the rest is MaxSim), and runtime
(OpenVINO as served, or torch), on the golden sets' own hybrid top-20 lists.

    PYTHONPATH=$PWD python benchmarks/models/rerank_length.py --golden benchmarks/eval/golden/python_docs.jsonl \\
        --tenant pydocs --configs 256:auto:0.5,128:auto:0.5,96:auto:0.5,128:auto:0,128:auto:0.5:torch

Needs a running stack (``ragstream up``) with the golden set's corpus indexed under ``--tenant``. Each question's
top 20 comes from the worker's own hybrid search; the scoring runs in one process of the model environment
(``_rerank_scores.py``, the same ``LateInteractionScorer`` the Triton reranker serves), every config over the same
lists, one after the other. nDCG@10 is the eval report's (``processors.evaluation.metrics``); "search order" is the
list as Milvus returned it, before any reranking. Each figure is also given per half of the golden set
(``development_half``): a setting is chosen on the development half, and the held-out half is the figure to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
from pathlib import Path

from infra.settings import REPO_ROOT, Settings
from processors.evaluation.golden import GoldenCase, development_half, load_golden
from processors.evaluation.metrics import match_ranks, ndcg_at_k, percentile
from processors.reporting.machine import describe_machine, load_average, run_facts
from schemas.events import Passage
from streams.clients.evaluation import EvalClients


async def top_lists(settings: Settings, cases: list[GoldenCase], tenant: str, top_k: int) -> list[list[Passage]]:
    clients = EvalClients(settings)  # the worker's own Milvus index and embedder, as the eval uses them
    try:
        vectors = await clients.embedder.embed([c.question for c in cases])
        return [
            await clients.index.search(tenant, case.question, vectors[i].tolist(), top_k, "hybrid")
            for i, case in enumerate(cases)
        ]
    finally:
        await clients.close()


def mean_ndcg(cases: list[GoldenCase], lists: list[list[Passage]], orders: list[list[int]]) -> str:
    """nDCG@10 over all cases, then over the development and the held-out half."""
    values = {
        case.id: ndcg_at_k(match_ranks([ranked[i] for i in order], case.relevant), len(case.relevant), 10) or 0.0
        for case, ranked, order in zip(cases, lists, orders, strict=True)
    }
    halves = [[v for k, v in values.items() if development_half(k) is dev] for dev in (True, False)]
    return " / ".join(f"{statistics.fmean(v):.3f}" if v else "-" for v in [list(values.values()), *halves])


def main(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    facts = run_facts()
    cases = [c for c in load_golden(args.golden) if c.relevant]
    lists = asyncio.run(top_lists(settings, cases, args.tenant, args.top_k))
    kept = [(c, ranked) for c, ranked in zip(cases, lists, strict=True) if ranked]
    cases, lists = [c for c, _ in kept], [r for _, r in kept]
    configs = []
    for spec in args.configs.split(","):
        length, precision, alpha, *runtime = spec.split(":")
        configs.append([int(length), precision, float(alpha), runtime[0] if runtime else "openvino"])
    job = {"configs": configs, "cases": [{"query": c.question, "texts": [p.text for p in r]} for c, r in kept]}
    scored = json.loads(
        subprocess.run(
            [str(settings.triton_python), str(Path(__file__).with_name("_rerank_scores.py"))],
            input=json.dumps(job), capture_output=True, text=True, check=True, cwd=REPO_ROOT,
        ).stdout
    )  # fmt: skip
    search_order = mean_ndcg(cases, lists, [list(range(len(r))) for r in lists])
    tokens = scored[0]["tokens"]
    print(
        f"{facts['started_at']}, commit {facts['git_commit']}, {describe_machine(facts['machine'])}; load at the end "
        f"{load_average()}; {len(cases)} cases of {args.golden}, hybrid top {args.top_k} from tenant {args.tenant}; "
        f"passage length in tokens p50 {percentile(tokens, 50):.0f}, p90 {percentile(tokens, 90):.0f}, "
        f"max {max(tokens)}; nDCG@10 (all / development half / held-out half) in search order {search_order}\n"
    )
    print("| max_length | precision | alpha | runtime | p50 ms | p95 ms | nDCG@10 reranked (all / dev / held-out) |")
    print("|---|---|---|---|---|---|---|")
    for result in scored:
        orders = [sorted(range(len(s)), key=s.__getitem__, reverse=True) for s in result["scores"]]
        ms = result["ms"]
        print(
            f"| {result['max_length']} | {result['precision']} | {result['alpha']} | {result['runtime']} "
            f"| {statistics.median(ms):.0f} "
            f"| {percentile(ms, 95):.0f} | {mean_ndcg(cases, lists, orders)} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, default=Path("benchmarks/eval/golden/python_docs.jsonl"))
    parser.add_argument("--tenant", default="pydocs")
    parser.add_argument("--top-k", type=int, default=20, help="passages per question (the worker's retrieve_k)")
    parser.add_argument(
        "--configs",
        default="256:auto:0.5,128:auto:0.5,96:auto:0.5,128:auto:0",
        help="max_length:precision:alpha[:runtime],... (runtime: openvino, as served, or torch)",
    )
    main(parser.parse_args())
