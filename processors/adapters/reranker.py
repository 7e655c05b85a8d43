"""Re-ranking from the ``reranker`` model in Triton (contract: :data:`schemas.triton.RERANK_INPUTS`)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np
import tritonclient.grpc.aio as grpcclient

from processors.adapters.triton import TritonClient
from schemas.events import Passage


class TritonReranker:
    def __init__(self, client: TritonClient, *, model: str = "reranker") -> None:
        self.client = client
        self.model = model

    async def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        q = np.array([[query.encode("utf-8")]], dtype=np.object_)
        p = np.array([[text.encode("utf-8") for text in texts]], dtype=np.object_)
        inputs = [
            grpcclient.InferInput("query", list(q.shape), "BYTES"),
            grpcclient.InferInput("passages", list(p.shape), "BYTES"),
        ]
        inputs[0].set_data_from_numpy(q)
        inputs[1].set_data_from_numpy(p)
        result = await self.client.infer(self.model, inputs, ["scores"])
        return [float(x) for x in np.asarray(result["scores"]).reshape(-1)]

    async def rerank(self, query: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        scores = await self.scores(query, [passage.text for passage in passages])
        ranked = sorted(zip(scores, passages, strict=True), key=lambda pair: pair[0], reverse=True)
        return [msgspec.structs.replace(passage, score=score) for score, passage in ranked[:top_k]]
