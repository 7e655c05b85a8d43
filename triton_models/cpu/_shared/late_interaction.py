"""Relevance of passages to a query from all-MiniLM-L6-v2 alone (no cross-encoder with bundled weights is on PyPI).

score = alpha * cosine(mean-pooled query, mean-pooled passage)            (the bi-encoder view)
      + (1 - alpha) * MaxSim(query tokens, passage tokens)                 (ColBERT-style late interaction:
        mean over query tokens of the best cosine to any passage token)
mapped from [-1, 1] to [0, 1] so that, like production's cross-encoder (sigmoid), scores are in (0, 1).
Both views come from one forward pass over the query and its passages.

The forward pass runs on torch or on OpenVINO (``_shared/encoder.py``); on the 2-core development machine OpenVINO
is 1.7x torch's bf16 autocast for 20 passages with the same ranking quality (``benchmarks/models/rerank_length.py``),
scores within 0.001 (``tests/triton_models/test_late_interaction.py``).
"""

from __future__ import annotations

import torch
from encoder import TransformerEncoder


class LateInteractionScorer:
    def __init__(
        self,
        model_dir: str,
        *,
        alpha: float = 0.5,
        max_length: int = 128,
        query_max_length: int = 256,
        runtime: str = "openvino",
        precision: str = "auto",
        threads: int = 2,
    ) -> None:
        self.encoder = TransformerEncoder(model_dir, runtime=runtime, precision=precision, threads=threads)
        self.tokenizer = self.encoder.tokenizer
        self.alpha = alpha
        self.max_length = max_length  # per passage: the ingest's chunks are ~180 tokens, 128 rank them as well
        # A question may be long (a relayed RAG prompt puts the question after its rules): it is read further, alone.
        self.query_max_length = query_max_length

    @property
    def runtime(self) -> str:
        return self.encoder.runtime

    @property
    def precision(self) -> str:
        return self.encoder.precision

    def _encode(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.encoder.tokenize(texts, max_length)
        hidden = self.encoder.token_states(batch)  # [n, t, 384]
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
