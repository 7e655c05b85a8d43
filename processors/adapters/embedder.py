"""Text embeddings from the ``embedder`` model in Triton (contract: :data:`schemas.triton.EMBEDDING_INPUTS`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient

from processors.adapters.triton import TritonClient
from processors.protocols import Vectors


class TritonEmbedder:
    """Sends texts in batches of at most ``max_batch`` (the model's ``max_batch_size``)."""

    def __init__(self, client: TritonClient, *, model: str = "embedder", dim: int = 384, max_batch: int = 64) -> None:
        self.client = client
        self.model = model
        self.dim = dim
        self.max_batch = max_batch

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.max_batch):
            batch = texts[start : start + self.max_batch]
            array = np.array([[text.encode("utf-8")] for text in batch], dtype=np.object_)
            tensor = grpcclient.InferInput("text", list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            result = await self.client.infer(self.model, [tensor], ["embedding"])
            parts.append(np.asarray(result["embedding"], dtype=np.float32).reshape(len(batch), -1))
        return np.concatenate(parts)
