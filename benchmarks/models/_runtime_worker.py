"""One runtime, one chat model, one process: the worker half of ``runtimes.py``. Prints one JSON line.

It runs under the Triton models' environment (``.venv-triton``, never the app's) and drives the engines those
models serve, through the same interface: ``torch`` is ``triton_models/cpu/_shared/chat_engine.py``, ``openvino``
is ``openvino_engine.py`` (OpenVINO GenAI's continuous-batching pipeline, stepped by the engine's own thread). Both
get the same prompts, the same greedy decoding, the same token limit and the same number of CPU threads, and their
answers' tokens are counted the same way.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"
sys.path.insert(0, str(SHARED))

from inprocess import summarize  # noqa: E402  (this folder: bench_models.py's in-process half, same figures)

Stats = list[dict[str, Any]]


class EngineRuntime:
    """What both runtimes share: an engine with the served interface (``submit`` a ``GenRequest``, pieces come back
    through its ``emit``), driven as the Triton model drives it, and every answer's tokens counted the same way."""

    engine: Any
    tokenizer: Any

    def run(self, prompts: list[str], max_tokens: int) -> tuple[Stats, float, float, list[str]]:
        from chat_engine import GenRequest  # type: ignore[import-not-found]

        n = len(prompts)
        done = [threading.Event() for _ in range(n)]
        stats: Stats = [{"first": None, "tokens": 0, "end": None, "text": "", "prompt_tokens": 0} for _ in range(n)]
        start = time.monotonic()
        requests = []
        for i, prompt in enumerate(prompts):

            def emit(piece: str, final: bool, i: int = i) -> None:
                now = time.monotonic()
                if piece:
                    if stats[i]["first"] is None:
                        stats[i]["first"] = now
                    stats[i]["text"] += piece
                if final:
                    stats[i]["end"] = now
                    done[i].set()

            def fail(message: str, i: int = i) -> None:
                print(message, file=sys.stderr)
                stats[i]["end"] = time.monotonic()
                done[i].set()

            request = GenRequest(prompt=prompt, max_tokens=max_tokens, emit=emit, fail=fail, request_id=str(i))
            requests.append(request)
            self.engine.submit(request)
        for event in done:
            event.wait()
        for stat, request in zip(stats, requests, strict=True):
            stat["prompt_tokens"] = request.prompt_tokens
            # tokens of the streamed text, not emitted pieces (a piece may hold several), the same way on both sides
            stat["tokens"] = len(self.tokenizer.encode(stat["text"], add_special_tokens=False))
        return stats, start, time.monotonic() - start, [s["text"] for s in stats]

    def close(self) -> None:
        self.engine.close()


class TorchRuntime(EngineRuntime):
    """The torch engine (``chat_engine.py``), weights kept in fp32 or bf16 (as ``precision`` fp32 / bf16)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import model_files as mf  # type: ignore[import-not-found]
        import torch
        from chat_engine import ChatEngine
        from cpu_precision import weights_dtype  # type: ignore[import-not-found]

        torch.set_num_threads(spec["threads"])
        model, tokenizer = mf.load_causal_lm(mf.source(spec["kind"]))
        model = model.to(weights_dtype(spec["weights"])[1])
        self.tokenizer = tokenizer
        self.engine = ChatEngine(model, tokenizer, name=spec["kind"], max_active=max(spec["concurrency"]))


class OpenVINORuntime(EngineRuntime):
    """The engine Triton serves with ``runtime: openvino`` (``openvino_engine.py``: OpenVINO GenAI's continuous
    batching pipeline stepped by one thread), on the IR named by ``path``, computing in ``activations``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import model_files as mf
        from openvino_engine import OpenVINOChatEngine  # type: ignore[import-not-found]

        self.tokenizer = mf.load_tokenizer(mf.source(spec["kind"]))
        precision = {"f32": "fp32", "bf16": "bf16"}[spec["activations"]]
        self.engine = OpenVINOChatEngine(
            spec["path"], self.tokenizer, name=spec["kind"], precision=precision, threads=spec["threads"],
            max_active=max(spec["concurrency"]), log=lambda message: print(message, file=sys.stderr),
        )  # fmt: skip


RUNTIMES: dict[str, Callable[[dict[str, Any]], Any]] = {"torch": TorchRuntime, "openvino": OpenVINORuntime}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    started = time.monotonic()
    runtime = RUNTIMES[spec["runtime"]](spec)
    load_s = time.monotonic() - started
    prompts: list[str] = spec["prompts"]
    runtime.run(prompts[:1], spec["max_tokens"])  # warm-up (first-call compilation, allocator)
    out: dict[str, Any] = {"load_s": load_s, "concurrency": {}}
    single, _start, _wall, texts = runtime.run(prompts[:1], spec["max_tokens"])
    out["answer"] = texts[0]
    out["prompt_tokens"] = single[0]["prompt_tokens"]
    for n in spec["concurrency"]:
        batch = [prompts[i % len(prompts)] for i in range(n)]
        stats, start, wall, _ = runtime.run(batch, spec["max_tokens"])
        out["concurrency"][str(n)] = summarize(stats, start, wall)
    runtime.close()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
