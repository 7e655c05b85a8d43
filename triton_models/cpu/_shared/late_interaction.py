"""Relevance of passages to a query from all-MiniLM-L6-v2 alone (no cross-encoder with bundled weights is on PyPI).

score = alpha * cosine(mean-pooled query, mean-pooled passage)            (the bi-encoder view)
      + (1 - alpha) * MaxSim(query tokens, passage tokens)                 (ColBERT-style late interaction:
        mean over query tokens of the best cosine to any passage token)
mapped from [-1, 1] to [0, 1] so that, like production's cross-encoder (sigmoid), scores are in (0, 1).
Both views come from one forward pass over the query and its passages.

The forward pass runs on torch, or on OpenVINO (``runtime="openvino"``): the torch model is converted in memory
when the scorer is built (~2.5 s) and compiled for ``precision``; on the 2-core development machine that is 1.7x
torch's bf16 autocast for 20 passages with the same ranking quality (``benchmarks/models/rerank_length.py``), scores
within 0.001 (``tests/triton_models/test_late_interaction.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class LateInteractionScorer:
    def __init__(
        self,
        model_dir: str,
        *,
        alpha: float = 0.5,
        max_length: int = 128,
        query_max_length: int = 256,
        forward: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        runtime: str = "torch",
        precision: str = "fp32",
        threads: int = 2,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.runtime = runtime
        self.compiled = None
        if runtime == "openvino":
            self.compiled = _openvino_encoder(self.model, self.tokenizer, precision, threads)
        self.alpha = alpha
        self.max_length = max_length  # per passage: the ingest's chunks are ~180 tokens, 128 rank them as well
        # A question may be long (a relayed RAG prompt puts the question after its rules): it is read further, alone.
        self.query_max_length = query_max_length
        self.forward = forward  # e.g. bf16 autocast (cpu_precision.forward_context)

    def _encode(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if self.compiled is not None:
            hidden = torch.from_numpy(self.compiled({k: v.numpy() for k, v in batch.items()})[0]).float()
        else:
            with torch.inference_mode(), self.forward():
                hidden = self.model(**batch).last_hidden_state.float()  # [n, t, 384]
        mask = batch["attention_mask"].float()
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        tokens = torch.nn.functional.normalize(hidden, dim=-1)
        # Late interaction ignores [CLS]/[SEP] and padding.
        special = torch.zeros_like(mask, dtype=torch.bool)
        for token_id in (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id):
            if token_id is not None:
                special |= batch["input_ids"] == token_id
        token_mask = mask.bool() & ~special
        return pooled, tokens, token_mask

    def scores(self, query: str, passages: list[str], alpha: float | None = None) -> list[float]:
        if not passages:
            return []
        alpha = self.alpha if alpha is None else alpha
        q_pooled, q_tokens, q_mask = self._encode([query], self.query_max_length)
        pooled, tokens, token_mask = self._encode(passages, self.max_length)
        cosine = pooled @ q_pooled[0]  # [p]
        q_tok = q_tokens[0][q_mask[0]]  # [tq, d]
        if q_tok.shape[0] == 0:
            maxsim = cosine
        else:
            sim = torch.einsum("qd,ptd->pqt", q_tok, tokens)  # [p, tq, tp]
            sim = sim.masked_fill(~token_mask[:, None, :], -1.0)
            maxsim = sim.max(-1).values.mean(-1)  # [p]
        blended = alpha * cosine + (1.0 - alpha) * maxsim
        return ((blended + 1.0) / 2.0).tolist()


def _openvino_encoder(model, tokenizer, precision: str, threads: int):
    """The encoder converted to OpenVINO in memory (dynamic batch and length) and compiled for the CPU; called with
    the tokenizer's arrays, it returns ``[last_hidden_state]``."""
    import openvino as ov
    from cpu_precision import openvino_hint

    example = tokenizer(["a short example", "and another"], padding=True, return_tensors="pt")
    converted = ov.convert_model(model, example_input=dict(example))
    properties = {"INFERENCE_PRECISION_HINT": openvino_hint(precision), "INFERENCE_NUM_THREADS": threads}
    return ov.Core().compile_model(converted, "CPU", properties)
