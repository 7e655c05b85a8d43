"""The Triton side of ``llm_small`` / ``llm_large``: parse the generation contract, feed :class:`ChatEngine`.

Contract: ``schemas.triton.GENERATION_INPUTS`` -> ``text_output`` (TensorRT-LLM ensemble interface), decoupled:
with ``stream`` true (the default) one response per new piece of text, then an empty final flag; with ``stream``
false one response with the whole text. The first response also carries ``num_input_tokens``
(``schemas.triton.PROMPT_TOKENS``). ``text_input`` is already chat-templated (see ``chat_engine``).
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
from model_files import load_causal_lm, source


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
        torch.set_num_threads(int(_param(config, "torch_threads", "2")))
        model, tokenizer = load_causal_lm(source(_param(config, "model_kind", "smollm2")))
        self.precision, dtype = weights_dtype(_param(config, "precision", "auto"))
        model = model.to(dtype)
        self.engine = ChatEngine(
            model,
            tokenizer,
            name=self.name,
            max_active=int(_param(config, "max_active", "16")),
            max_context=int(_param(config, "max_context", "4096")),
            lora_dir=_param(config, "lora_dir", "") or os.environ.get("RAGSTREAM_ADAPTERS_DIR") or None,
            max_loras=int(_param(config, "max_loras", "8")),
            log=pb_utils.Logger.log_info,
        )
        self._warm_up(tokenizer)
        pb_utils.Logger.log_info(
            f"{self.name}: {model.config.model_type} loaded in {self.precision}, eos ids {sorted(self.engine.eos_ids)}"
        )

    def _warm_up(self, tokenizer) -> None:
        """One short generation, so the first real request does not pay for torch's lazy initialisation."""
        done = threading.Event()
        self.engine.submit(
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
        self.engine.submit(gen)

    def finalize(self):
        self.engine.close()
