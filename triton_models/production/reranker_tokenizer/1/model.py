"""Tokenizer step of the GPU ``reranker`` ensemble.

A cross-encoder reads query and passage together, so each request's ``query`` is paired with each of its
``passages`` here. The result is shaped ``[batch, passages, tokens]`` (padded to the longest pair in the
request, truncating only passages) and ``reranker_onnx`` scores all pairs of a request in one GPU call.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


class TritonPythonModel:
    """Python-backend entry point; Triton looks the class up by this name."""

    def initialize(self, args: dict[str, str]) -> None:
        params = json.loads(args["model_config"])["parameters"]
        self._tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"]["string_value"])
        self._max_length = int(params["max_length"]["string_value"])

    def execute(self, requests: list[Any]) -> list[Any]:
        # Requests differ in passage count, so each is tokenized (and padded) on its own.
        return [self._tokenize(request) for request in requests]

    def _tokenize(self, request: Any) -> Any:
        queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy().reshape(-1)
        passages = pb_utils.get_input_tensor_by_name(request, "passages").as_numpy()
        batch, count = passages.shape
        if count == 0:
            error = pb_utils.TritonError("reranker needs at least one passage")
            return pb_utils.InferenceResponse(output_tensors=[], error=error)

        firsts = [_as_text(queries[row]) for row in range(batch) for _ in range(count)]
        seconds = [_as_text(passage) for passage in passages.reshape(-1)]
        encoded = self._tokenizer(
            firsts,
            seconds,
            padding="longest",
            truncation="only_second",
            max_length=self._max_length,
            return_tensors="np",
        )
        tensors = [
            pb_utils.Tensor(name, encoded[name].astype(np.int64).reshape(batch, count, -1))
            for name in ("input_ids", "attention_mask")
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _as_text(value: Any) -> str:
    """Triton delivers TYPE_STRING elements as bytes; anything else is taken as already decoded."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
