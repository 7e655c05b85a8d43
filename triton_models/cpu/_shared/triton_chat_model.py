"""The Triton side of ``llm_small`` / ``llm_large``: parse the generation contract, feed its engine.

Contract: ``schemas.triton.GENERATION_INPUTS`` -> ``text_output`` (TensorRT-LLM ensemble interface), decoupled:
with ``stream`` true (the default) one response per new piece of text, then an empty final flag; with ``stream``
false one response with the whole text. The first response also carries ``num_input_tokens``
(``schemas.triton.PROMPT_TOKENS``). ``text_input`` is already chat-templated (see ``chat_engine``).

Runtime (the ``runtime`` parameter): ``openvino`` (the default: ``openvino_engine.py``, the IR exported at set-up)
or ``torch`` (``chat_engine.py``). A request that names a LoRA adapter always goes to the torch engine, which is
loaded the first time one arrives: multi-LoRA lives there.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from chat_engine import ChatEngine, GenRequest
from cpu_precision import weights_dtype
from model_files import load_causal_lm, load_tokenizer, openvino_folder, source

RUNTIMES = ("openvino", "torch")


def _param(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)
    return value[0] if len(value) else default


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _response(text: str, prompt_tokens: int | None = None):
    """A piece of text; the first response of a request also carries the prompt's token count."""
    tensors = [pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_))]
    if prompt_tokens is not None:
        tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[prompt_tokens]], dtype=np.int32)))
    return pb_utils.InferenceResponse(output_tensors=tensors)


class ChatModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.config = config
        self.threads = int(_param(config, "torch_threads", "2"))
        torch.set_num_threads(self.threads)
        self.source = source(_param(config, "model_kind", "smollm2"))
        self.precision, _dtype = weights_dtype(_param(config, "precision", "auto"))
        self.runtime = _param(config, "runtime", "openvino")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"{self.name}: runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        self._torch_engine: ChatEngine | None = None
        self._torch_lock = threading.Lock()
        if self.runtime == "openvino":
            from openvino_engine import OpenVINOChatEngine

            folder = openvino_folder(self.source)
            if not (folder / ".complete").exists():
                raise RuntimeError(
                    f"{self.name}: no OpenVINO IR in {folder}; run infra/scripts/setup.sh (it exports it with "
                    "triton_models/cpu/_shared/openvino_export.py), or set the runtime parameter to torch"
                )
            tokenizer = load_tokenizer(self.source)
            self.engine = OpenVINOChatEngine(
                folder,
                tokenizer,
                name=self.name,
                precision=self.precision,
                threads=self.threads,
                max_active=int(_param(config, "max_active", "16")),
                max_context=int(_param(config, "max_context", "4096")),
                kv_cache_gb=int(_param(config, "kv_cache_gb", "1")),
                log=pb_utils.Logger.log_info,
            )
        else:
            self.engine = self._torch()
        self._warm_up(self.engine)
        pb_utils.Logger.log_info(
            f"{self.name}: {self.source.name} loaded, runtime {self.runtime}, precision {self.precision}, "
            f"eos ids {sorted(self.engine.eos_ids)}"
        )

    def _torch(self) -> ChatEngine:
        """The torch engine: the served one with ``runtime: torch``, else made for the first LoRA request."""
        with self._torch_lock:
            if self._torch_engine is None:
                model, tokenizer = load_causal_lm(self.source)
                model = model.to(weights_dtype(self.precision)[1])
                self._torch_engine = ChatEngine(
                    model,
                    tokenizer,
                    name=self.name,
                    max_active=int(_param(self.config, "max_active", "16")),
                    max_context=int(_param(self.config, "max_context", "4096")),
                    lora_dir=_param(self.config, "lora_dir", "") or os.environ.get("RAGSTREAM_ADAPTERS_DIR") or None,
                    max_loras=int(_param(self.config, "max_loras", "8")),
                    log=pb_utils.Logger.log_info,
                )
            return self._torch_engine

    @staticmethod
    def _warm_up(engine) -> None:
        """One short generation, so the first real request does not pay for lazy initialisation (torch's
        allocator, OpenVINO's kernel compilation)."""
        done = threading.Event()
        engine.submit(
            GenRequest(
                prompt="<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                max_tokens=2,
                request_id="warm-up",
                emit=lambda piece, final: final and done.set(),
                fail=lambda message: done.set(),
            )
        )
        done.wait(timeout=60)

    def execute(self, requests):
        for request in requests:
            self._submit(request)

    def _submit(self, request) -> None:
        sender = request.get_response_sender()
        lock = threading.Lock()
        counted = False  # whether a response has carried num_input_tokens yet

        def emit(piece: str, final: bool) -> None:
            nonlocal counted
            with lock:
                if piece or (final and not counted and gen.prompt_tokens):
                    sender.send(_response(piece, None if counted else gen.prompt_tokens))
                    counted = True
                if final:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

        def fail(message: str) -> None:
            with lock:
                error = pb_utils.TritonError(message)
                sender.send(
                    pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )

        try:
            stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
            stop_words = ()
            if stop_tensor is not None:
                stop_words = tuple(w for w in (_text(x) for x in stop_tensor.as_numpy().reshape(-1)) if w)
            seed = pb_utils.get_input_tensor_by_name(request, "seed")
            gen = GenRequest(
                prompt=_text(_scalar(request, "text_input", b"")),
                max_tokens=int(_scalar(request, "max_tokens", 256)),
                temperature=float(_scalar(request, "temperature", 0.0)),
                top_p=float(_scalar(request, "top_p", 1.0)),
                top_k=int(_scalar(request, "top_k", 0)),
                stop_words=stop_words,
                seed=None if seed is None else int(seed.as_numpy().reshape(-1)[0]),
                stream=bool(_scalar(request, "stream", True)),
                request_id=request.request_id(),
                emit=emit,
                fail=fail,
                is_cancelled=request.is_cancelled,
                lora_name=_text(_scalar(request, "lora_name", b"")).strip(),
            )
        except Exception as exc:
            fail(f"{self.name}: bad request: {exc}")
            return
        engine = self.engine
        if gen.lora_name:  # multi-LoRA lives in the torch engine (self.engine itself with runtime torch)
            try:
                engine = self._torch()
            except Exception as exc:
                fail(f"{self.name}: cannot load the torch engine for LoRA adapters: {exc}")
                return
        engine.submit(gen)

    def finalize(self):
        self.engine.close()
        if self._torch_engine is not None and self._torch_engine is not self.engine:
            self._torch_engine.close()
