"""Tokenizer step of the GPU ``embedder`` ensemble.

ONNX Runtime runs the encoder on token ids, so the text has to be tokenized somewhere; doing it here keeps
clients on the same ``text -> embedding`` contract as the CPU stack. Every request in a dynamic batch is
tokenized in one call (the fast tokenizer parallelises internally) and padded to the fixed ``max_length``
the TensorRT profile of ``embedder_onnx`` was built for.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TritonPythonModel:
    """Python-backend entry point; Triton looks the class up by this name."""

    def initialize(self, args: dict[str, str]) -> None:
        params = json.loads(args["model_config"])["parameters"]
        self._tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"]["string_value"])
        self._max_length = int(params["max_length"]["string_value"])

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts.extend(_as_text(value) for value in rows)
            counts.append(len(rows))

        encoded = self._tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self._max_length,
            return_tensors="np",
        )
        responses = []
        start = 0
        for count in counts:
            rows = slice(start, start + count)
            start += count
            tensors = [pb_utils.Tensor(name, encoded[name][rows].astype(np.int64)) for name in _OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


def _as_text(value: Any) -> str:
    """Triton delivers TYPE_STRING elements as bytes; anything else is taken as already decoded."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
