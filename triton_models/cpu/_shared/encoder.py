"""all-MiniLM-L6-v2's token states from torch or from OpenVINO: one home for the encoder that the embedders
(mean-pooled sentence vectors) and the reranker (late interaction) both run.

With ``runtime="openvino"`` the torch model is converted in memory when the encoder is built (~1.5 s), compiled for
the CPU in the chosen precision, and then dropped (the compiled model keeps its own copy of the weights). On the
2-core development machine, both in bf16, that is 1.6x torch's texts/s for 200-token chunks and a third of its time
for one question, with cosine >= 0.9999 to sentence-transformers' fp32 vectors
(``benchmarks/ingest/bench_embedder.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cpu_precision import forward_context, openvino_hint

RUNTIMES = ("torch", "openvino")


class TransformerEncoder:
    def __init__(self, model_dir: str, *, runtime: str = "openvino", precision: str = "auto", threads: int = 2) -> None:
        from transformers import AutoModel, AutoTokenizer

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        self.runtime = runtime
        self.precision, self._autocast = forward_context(precision)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._model: Any = AutoModel.from_pretrained(model_dir).eval()
        self.dim: int = self._model.config.hidden_size
        self._compiled: Any = None
        if runtime == "openvino":
            self._compiled = self._compile(threads)
            self._model = None  # ~90 MB of fp32 weights nothing reads any more

    def _compile(self, threads: int) -> Any:
        import openvino as ov

        example = self.tokenizer(["a short example", "and another"], padding=True, return_tensors="pt")
        # Own copy of the weights, so that the torch model can be freed; dynamic batch and length.
        converted = ov.convert_model(self._model, example_input=dict(example), share_weights=False)
        properties = {"INFERENCE_PRECISION_HINT": openvino_hint(self.precision), "INFERENCE_NUM_THREADS": threads}
        return ov.Core().compile_model(converted, "CPU", properties)

    def tokenize(self, texts: list[str], max_length: int) -> Any:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def token_states(self, batch: Any) -> torch.Tensor:
        """last_hidden_state, float32, ``[rows, tokens, dim]``."""
        if self._compiled is not None:
            return torch.from_numpy(self._compiled({k: v.numpy() for k, v in batch.items()})[0]).float()
        with torch.inference_mode(), self._autocast():
            return self._model(**batch).last_hidden_state.float()

    def embed(self, texts: list[str], *, max_length: int, batch_size: int) -> np.ndarray:
        """Mean-pooled, L2-normalized sentence vectors (sentence-transformers' recipe for this model), ``[n, dim]``.
        Texts are encoded in length order, so each forward pass pads to a similar length."""
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in rows], max_length)
            hidden = self.token_states(batch)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return vectors
