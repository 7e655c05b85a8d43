"""Continuous batching on CPU by OpenVINO GenAI, behind the same interface as :class:`chat_engine.ChatEngine`.

Why: on the 2-core development machine OpenVINO runs the same models in the same precision 2-4x faster per
stream than transformers + torch, and serves concurrent streams with a paged KV cache and chunked prefill
(``benchmarks/models/runtimes.py`` measures both in one run). The weights are an OpenVINO IR exported once at
set-up from the fp32 copy ``model_files.py`` keeps (``openvino_export.py``).

One background thread owns the pipeline. Each step it

1. admits waiting requests (tokenized here with the model's own Hugging Face tokenizer, so prompt token counts,
   context limits and the text that comes out match the torch engine exactly) with ``add_request``;
2. runs ``pipeline.step()``: OpenVINO's scheduler prefills newcomers in chunks alongside one decode token for every
   running sequence;
3. reads each handle's new tokens, streams the new text (holding back a partial character or a stop word's
   prefix), and retires requests that finished, hit a stop word (``handle.stop()``) or were cancelled
   (``request.is_cancelled()``, checked at most every ``cancel_check_s``; ``handle.cancel()`` frees its KV blocks).

LoRA adapters are not served here: the Triton model sends requests that name one to the torch engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from chat_engine import Answer, GenRequest, QueuedEngine, end_of_turn_ids, fail_quietly, take_waiting
from cpu_precision import openvino_hint


@dataclass
class _Stream(Answer):
    handle: object = None  # the pipeline's GenerationHandle


class OpenVINOChatEngine(QueuedEngine):
    def __init__(
        self,
        model_dir: str | Path,
        tokenizer,
        *,
        name: str,
        precision: str = "fp32",
        threads: int = 2,
        max_active: int = 16,
        max_context: int = 4096,
        kv_cache_gb: int = 1,
        max_batched_tokens: int = 2048,
        cancel_check_s: float = 0.05,
        log=print,
    ) -> None:
        import openvino_genai as og

        self.og = og
        self.name = name
        self.tokenizer = tokenizer
        self.max_active = max_active
        self.max_context = max_context
        self.cancel_check_s = cancel_check_s
        self.log = log
        scheduler = og.SchedulerConfig()
        scheduler.max_num_seqs = max_active
        scheduler.cache_size = kv_cache_gb  # GB of paged KV cache; a request that does not fit waits for room
        scheduler.dynamic_split_fuse = True  # long prompts are prefilled in chunks between decode steps
        scheduler.max_num_batched_tokens = max_batched_tokens
        hint = openvino_hint(precision)
        # The KV cache in the precision of the arithmetic, as the torch engine keeps it (OpenVINO's CPU default
        # compresses it to u8, a precision change of its own).
        properties = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint, "KV_CACHE_PRECISION": hint}
        self.pipe = og.ContinuousBatchingPipeline(str(model_dir), scheduler, "CPU", properties)
        self.eos_ids = _eos_ids(tokenizer, Path(model_dir))
        self._streams: list[_Stream] = []
        self._next_id = 0
        self.steps = 0
        self.max_batch_seen = 0
        self._start(f"{name}-openvino")

    # Engine thread --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for request in self._take_waiting(block=not self._streams):
                    self._admit(request)
                if self._streams:
                    self.pipe.step()
                    self.steps += 1
                    self.max_batch_seen = max(self.max_batch_seen, len(self._streams))
                    self._collect()
            except Exception as exc:  # fail every request in flight, keep serving new ones
                self.log(f"{self.name}: engine step failed: {type(exc).__name__}: {exc}")
                for stream in self._streams:
                    with contextlib.suppress(Exception):
                        stream.handle.cancel()
                    self._fail(stream.req, f"{self.name} failed: {exc}")
                self._streams = []
        for stream in self._streams:
            self._fail(stream.req, f"{self.name} is shutting down")
        self._streams = []

    def _take_waiting(self, *, block: bool) -> list[GenRequest]:
        return take_waiting(self._queue, self.max_active - len(self._streams), block=block)

    @staticmethod
    def _fail(req: GenRequest, message: str) -> None:
        fail_quietly(req, message)

    def _admit(self, req: GenRequest) -> None:
        import numpy as np
        import openvino as ov

        if req.is_cancelled is not None and req.is_cancelled():
            self.log(f"{self.name}: request '{req.request_id}' cancelled after 0 tokens")
            req.emit("", True)
            return
        if req.lora_name:
            self._fail(req, f"{self.name}: LoRA adapters are served by the torch engine, not OpenVINO")
            return
        ids = self.tokenizer(req.prompt, add_special_tokens=False)["input_ids"] or [self.tokenizer.pad_token_id or 0]
        req.prompt_tokens = len(ids)
        if len(ids) >= self.max_context:
            self._fail(req, f"{self.name}: prompt is {len(ids)} tokens; the context is {self.max_context}")
            return
        req.max_tokens = max(0, min(req.max_tokens, self.max_context - len(ids)))
        if req.max_tokens == 0:
            req.emit("", True)
            return
        config = self.og.GenerationConfig()
        config.max_new_tokens = req.max_tokens
        config.stop_token_ids = set(self.eos_ids)
        if req.temperature > 0:
            config.do_sample = True
            config.temperature = float(req.temperature)
            config.top_p = float(req.top_p) if 0 < req.top_p <= 1 else 1.0
            if req.top_k > 0:
                config.top_k = int(req.top_k)
            if req.seed is not None:
                config.rng_seed = int(req.seed)
        else:
            config.do_sample = False
        handle = self.pipe.add_request(self._next_id, ov.Tensor(np.array([ids], dtype=np.int64)), config)
        self._next_id += 1
        self._streams.append(_Stream(req=req, handle=handle))

    def _collect(self) -> None:
        import time

        running = self.og.GenerationStatus.RUNNING
        now = time.monotonic()
        for stream in self._streams:
            req = stream.req
            if stream.cancel_due(now, self.cancel_check_s):
                stream.handle.cancel()
                stream.done = "cancelled"
                self.log(f"{self.name}: request '{req.request_id}' cancelled after {len(stream.ids)} tokens")
                continue
            if stream.handle.can_read():
                for output in stream.handle.read().values():
                    stream.ids.extend(t for t in output.generated_ids if t not in self.eos_ids)
                stream.set_text(self.tokenizer.decode(stream.ids, skip_special_tokens=True))
                if stream.done:  # a stop word
                    stream.handle.stop()
            if not stream.done and stream.handle.get_status() != running:
                stream.done = "length" if len(stream.ids) >= req.max_tokens else "stop"
            if req.stream and (piece := stream.take_piece()):
                self._emit(stream, piece, False)
        for stream in self._streams:
            if stream.done:
                self._emit(stream, stream.final_piece(), True)
        self._streams = [s for s in self._streams if not s.done]

    def _emit(self, stream: _Stream, piece: str, final: bool) -> None:
        try:
            stream.req.emit(piece, final)
        except Exception as exc:  # the client is gone; stop generating for it
            self.log(f"{self.name}: request '{stream.req.request_id}' send failed ({exc}); dropping it")
            if not stream.done:
                stream.handle.cancel()
                stream.done = "cancelled"


def _eos_ids(tokenizer, model_dir: Path) -> set[int]:
    """End-of-turn tokens, with the exported generation config's EOS (the torch engine reads the model's)."""
    import json

    config = model_dir / "generation_config.json"
    generation_eos = json.loads(config.read_text()).get("eos_token_id") if config.exists() else None
    return end_of_turn_ids(tokenizer, generation_eos)


__all__ = ["OpenVINOChatEngine"]
