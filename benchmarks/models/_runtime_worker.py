"""One runtime, one chat model, one process: the worker half of ``runtimes.py``. Prints one JSON line.

It runs under the environment of the runtime it measures (never the app's): ``torch`` under ``.venv-triton`` with
the engine the Triton models serve (``triton_models/cpu/_shared/chat_engine.py``), ``openvino`` under
``.venv-openvino`` with OpenVINO GenAI's continuous-batching pipeline driven step by step, as a serving loop would.
Both get the same prompts, the same greedy decoding, the same token limit and the same number of CPU threads.
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


class TorchRuntime:
    """The served engine: transformers + torch, weights kept in fp32 or bf16 (as ``precision`` fp32 / bf16)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import model_files as mf  # type: ignore[import-not-found]
        import torch
        from chat_engine import ChatEngine  # type: ignore[import-not-found]
        from cpu_precision import weights_dtype  # type: ignore[import-not-found]

        torch.set_num_threads(spec["threads"])
        model, tokenizer = mf.load_causal_lm(mf.source(spec["kind"]))
        model = model.to(weights_dtype(spec["weights"])[1])
        self.tokenizer = tokenizer
        self.engine = ChatEngine(model, tokenizer, name=spec["kind"], max_active=max(spec["concurrency"]))

    def run(self, prompts: list[str], max_tokens: int) -> tuple[Stats, float, float, list[str]]:
        from chat_engine import GenRequest

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

            request = GenRequest(prompt=prompt, max_tokens=max_tokens, emit=emit, fail=print, request_id=str(i))
            requests.append(request)
            self.engine.submit(request)
        for event in done:
            event.wait()
        for stat, request in zip(stats, requests, strict=True):
            stat["prompt_tokens"] = request.prompt_tokens
            # counted as the OpenVINO side counts them: tokens, not emitted pieces (a piece may hold several)
            stat["tokens"] = len(self.tokenizer.encode(stat["text"], add_special_tokens=False))
        return stats, start, time.monotonic() - start, [s["text"] for s in stats]

    def close(self) -> None:
        self.engine.close()


class OpenVINORuntime:
    """OpenVINO GenAI's ContinuousBatchingPipeline: add_request, then step() until every handle has finished."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import openvino_genai as og  # type: ignore[import-not-found]

        self.og = og
        scheduler = og.SchedulerConfig()
        scheduler.max_num_seqs = max(spec["concurrency"])
        scheduler.cache_size = 1  # GB of KV cache: 16 streams x ~1.1k tokens fit several times over
        scheduler.dynamic_split_fuse = True
        scheduler.max_num_batched_tokens = 2048
        # The KV cache in the precision of the arithmetic, as torch keeps it (OpenVINO's CPU default is u8).
        precision = spec["activations"]
        properties = {"INFERENCE_NUM_THREADS": spec["threads"], "INFERENCE_PRECISION_HINT": precision,
                      "KV_CACHE_PRECISION": precision}  # fmt: skip
        self.pipe = og.ContinuousBatchingPipeline(spec["path"], scheduler, "CPU", properties)
        self.tokenizer = self.pipe.get_tokenizer()
        self.next_id = 0

    def run(self, prompts: list[str], max_tokens: int) -> tuple[Stats, float, float, list[str]]:
        og = self.og
        config = og.GenerationConfig()
        config.max_new_tokens = max_tokens
        config.do_sample = False
        stats: Stats = [{"first": None, "tokens": 0, "end": None, "ids": [], "prompt_tokens": 0} for _ in prompts]
        start = time.monotonic()
        handles = []
        for prompt, stat in zip(prompts, stats, strict=True):
            handles.append(self.pipe.add_request(self.next_id, prompt, config))
            self.next_id += 1
            stat["prompt_tokens"] = int(self.tokenizer.encode(prompt).input_ids.data.shape[-1])
        running = og.GenerationStatus.RUNNING
        while self.pipe.has_non_finished_requests():
            self.pipe.step()
            now = time.monotonic()
            for handle, stat in zip(handles, stats, strict=True):
                if stat["end"] is not None:
                    continue
                if handle.can_read():
                    for output in handle.read().values():
                        if output.generated_ids:
                            stat["first"] = stat["first"] or now
                            stat["ids"].extend(output.generated_ids)
                            stat["tokens"] += len(output.generated_ids)
                if handle.get_status() != running:
                    stat["end"] = now
        wall = time.monotonic() - start
        texts = [self.tokenizer.decode(s["ids"], skip_special_tokens=True) for s in stats]
        return stats, start, wall, texts

    def close(self) -> None:
        del self.pipe


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
