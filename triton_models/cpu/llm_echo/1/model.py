"""Streams ``text_input`` back in word-sized tokens: a model whose output and pace are known exactly.

Each request runs as its own coroutine and awaits between tokens, so concurrent streams interleave instead of
queueing. Honours ``max_tokens``, ``stop_words``, ``stream`` (false: one response with the whole text) and
cancellation.
"""

import asyncio
import json
import re

import numpy as np
import triton_python_backend_utils as pb_utils

_TOKEN = re.compile(r"\s*\S+")


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


def _text_response(text, prompt_tokens=None):
    tensors = [pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_))]
    if prompt_tokens is not None:  # the first response: the prompt's length in this model's (word) tokens
        tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[prompt_tokens]], dtype=np.int32)))
    return pb_utils.InferenceResponse(output_tensors=tensors)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.token_delay = float(params.get("token_delay_ms", {}).get("string_value", "5")) / 1000.0

    async def execute(self, requests):
        await asyncio.gather(*(self._serve(request) for request in requests))

    async def _serve(self, request):
        sender = request.get_response_sender()
        try:
            raw = _scalar(request, "text_input", b"")
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            max_tokens = int(_scalar(request, "max_tokens", 256))
            stream = bool(_scalar(request, "stream", True))
            stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
            stop_words = []
            if stop_tensor is not None:
                stop_words = [w.decode("utf-8") for w in stop_tensor.as_numpy().reshape(-1) if w]
            prompt = _TOKEN.findall(text)
            tokens = prompt[: max(max_tokens, 0)]
            emitted = []
            counted = None if not stream else len(prompt)  # sent with the first response, then None
            for token in tokens:
                if request.is_cancelled():
                    # Operators (and the tests) see that cancellation reached the model and stopped it.
                    pb_utils.Logger.log_info(
                        f"llm_echo: request '{request.request_id()}' cancelled after {len(emitted)} tokens"
                    )
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    return
                if any(stop and stop in token for stop in stop_words):
                    break
                emitted.append(token)
                if stream:
                    sender.send(_text_response(token, counted))
                    counted = None
                await asyncio.sleep(self.token_delay)
            if not stream:
                sender.send(_text_response("".join(emitted), len(prompt)))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the client must hear about any failure, not wait forever
            error = pb_utils.TritonError(f"llm_echo failed: {exc}")
            sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
