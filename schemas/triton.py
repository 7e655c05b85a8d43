"""The tensor contract between ragstream and its generation models in Triton.

It is TensorRT-LLM's ``ensemble`` interface (tensorrtllm_backend ``all_models/inflight_batcher_llm/ensemble``),
so the same client streams from the CPU models here and from TensorRT-LLM engines on GPUs in production. Each
model in ``triton_models/`` declares these tensors; a test checks every config against this table.
Shapes are given without the batch dimension: the models use ``max_batch_size > 0``, so a client sends ``[1, n]``.
"""

from __future__ import annotations

import msgspec


class TensorSpec(msgspec.Struct, frozen=True):
    name: str
    data_type: str  # Triton config name, e.g. "TYPE_STRING"
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def client_dtype(self) -> str:
        """The dtype name tritonclient expects (``InferInput(name, shape, dtype)``)."""
        return _CLIENT_DTYPES[self.data_type]


_CLIENT_DTYPES = {
    "TYPE_STRING": "BYTES",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_UINT64": "UINT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_BOOL": "BOOL",
}

GENERATION_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "TYPE_STRING", (1,)),
    TensorSpec("max_tokens", "TYPE_INT32", (1,)),
    TensorSpec("stream", "TYPE_BOOL", (1,), optional=True),
    TensorSpec("temperature", "TYPE_FP32", (1,), optional=True),
    TensorSpec("top_p", "TYPE_FP32", (1,), optional=True),
    TensorSpec("top_k", "TYPE_INT32", (1,), optional=True),
    TensorSpec("stop_words", "TYPE_STRING", (-1,), optional=True),
    TensorSpec("seed", "TYPE_UINT64", (1,), optional=True),
)

# Multi-LoRA on the CPU chat model (llm_small): the adapter a request uses, "tenant/sha16" under the model's adapter
# folder. Not part of the ensemble contract; a client sends it only to the model the adapter was trained for.
LORA_NAME = TensorSpec("lora_name", "TYPE_STRING", (1,), optional=True)

# Multi-LoRA on TensorRT-LLM (production): the adapter's task id in the engine's LoRA cache, and its weights and
# layout (processors/adapters/trtllm_lora.py) on the first request that names a task id the cache does not hold.
LORA_TASK_ID = TensorSpec("lora_task_id", "TYPE_UINT64", (1,), optional=True)
LORA_WEIGHTS = TensorSpec("lora_weights", "TYPE_FP16", (-1, -1), optional=True)
LORA_CONFIG = TensorSpec("lora_config", "TYPE_INT32", (-1, 3), optional=True)
TRTLLM_LORA_INPUTS: tuple[TensorSpec, ...] = (LORA_TASK_ID, LORA_WEIGHTS, LORA_CONFIG)

GENERATION_OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec("text_output", "TYPE_STRING", (-1,)),)

# The prompt's length in the model's own tokens, for the answer's usage record: sent once, in the first response
# (TensorRT-LLM's ensemble maps its preprocessing step's REQUEST_INPUT_LEN to it). A model without it leaves
# ``usage.prompt_tokens`` at 0; nothing else depends on it.
PROMPT_TOKENS = TensorSpec("num_input_tokens", "TYPE_INT32", (1,), optional=True)

# Embedder: one text per batch row; Triton's dynamic batcher merges concurrent requests. Vectors are L2-normalized.
EMBEDDING_INPUTS: tuple[TensorSpec, ...] = (TensorSpec("text", "TYPE_STRING", (1,)),)
EMBEDDING_OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec("embedding", "TYPE_FP32", (-1,)),)

# Reranker: one query and its candidate passages per batch row; one relevance score per passage (higher = better).
# A cross-encoder fits this interface unchanged.
RERANK_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("query", "TYPE_STRING", (1,)),
    TensorSpec("passages", "TYPE_STRING", (-1,)),
)
RERANK_OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec("scores", "TYPE_FP32", (-1,)),)
