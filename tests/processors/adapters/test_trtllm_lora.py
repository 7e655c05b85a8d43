"""PEFT adapters as TensorRT-LLM's LoRA tensors (:mod:`processors.adapters.trtllm_lora`), and what the Triton client
sends a TensorRT-LLM model for a tenant's adapter.

The fidelity test makes a real PEFT adapter on llm_small's SmolLM2 in the model environment, with random (not
zero) B matrices on all seven projections, and compares what each converted row means (B x A, as TensorRT-LLM's LoRA
plugin applies it) with PEFT's own ``get_delta_weight`` for that module.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.settings import Settings
from processors.adapters.triton import TritonClient, trtllm_lora_inputs
from processors.adapters.trtllm_lora import (
    MODULE_IDS,
    LoraFormatError,
    convert,
    load_peft_adapter,
    read_safetensors,
    task_id_for,
)
from processors.generation import GenerationParams
from schemas.triton import LORA_CONFIG, LORA_TASK_ID, LORA_WEIGHTS

SHARED = Path(__file__).resolve().parents[3] / "triton_models" / "cpu" / "_shared"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

MAKE_ADAPTER = r"""
import json, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(7)
import peft
from model_files import load_causal_lm, source
out, rslora = sys.argv[2], sys.argv[3] == "1"
base, _ = load_causal_lm(source("smollm2"), verify=False)
modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
config = peft.LoraConfig(r=4, lora_alpha=32, target_modules=modules, init_lora_weights=False, use_rslora=rslora)
model = peft.get_peft_model(base, config)
model.save_pretrained(out)
layers = model.base_model.model.model.layers
deltas = {}
for layer in (0, len(layers) - 1):
    for name in modules:
        parent = layers[layer].self_attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else layers[layer].mlp
        deltas[f"{layer}.{name}"] = getattr(parent, name).get_delta_weight("default").detach().float().numpy()
np.savez(f"{out}/deltas.npz", **deltas)
print(json.dumps({"layers": len(layers)}))
"""


def _peft_adapter(folder: Path, *, rslora: bool) -> int:
    settings = Settings()
    made = subprocess.run(
        ["nice", "-n", "10", str(settings.triton_python), "-c", MAKE_ADAPTER, str(SHARED), str(folder),
         "1" if rslora else "0"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    return int(json.loads(made.stdout.strip().splitlines()[-1])["layers"])


def _row_delta(weights: np.ndarray[Any, Any], rank: int, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    """What TensorRT-LLM's plugin applies for one row: its A (rank x in) then B (out x rank), B @ A."""
    out_dim, in_dim = shape
    a = weights[: rank * in_dim].astype(np.float32).reshape(rank, in_dim)
    b = weights[rank * in_dim : rank * in_dim + out_dim * rank].astype(np.float32).reshape(out_dim, rank)
    return b @ a


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha-over-rank", "rslora"])
def test_converted_rows_apply_the_same_update_as_peft(tmp_path: Path, rslora: bool) -> None:
    layers = _peft_adapter(tmp_path, rslora=rslora)
    lora = load_peft_adapter(tmp_path, task_id=task_id_for("acme/0123456789abcdef"))
    deltas = np.load(tmp_path / "deltas.npz")

    assert lora.weights.dtype == np.float16 and lora.config.dtype == np.int32
    assert lora.config.shape == (layers * len(MODULES), 3)
    rows = {(int(module), int(layer)): i for i, (module, layer, _rank) in enumerate(lora.config)}
    assert set(rows) == {(MODULE_IDS[name], layer) for name in MODULES for layer in range(layers)}
    assert set(lora.config[:, 2].tolist()) == {4}
    for key in deltas.files:
        layer, name = key.split(".")
        expected = deltas[key]
        row = lora.weights[rows[(MODULE_IDS[name], int(layer))]]
        got = _row_delta(row, 4, expected.shape)
        assert np.abs(expected).max() > 1e-3, key  # a real update, not PEFT's zero-initialised B
        np.testing.assert_allclose(got, expected, rtol=0.02, atol=2e-3 * np.abs(expected).max(), err_msg=key)
        used = 4 * (expected.shape[0] + expected.shape[1])
        assert not row[used:].any(), key  # a narrower row is zero-padded to the widest


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, body = 0, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


def test_bf16_tensors_are_read_exactly(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.25], [0.0078125, 2.0**28]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # these values are exact in bf16
    _safetensors(tmp_path / "t.safetensors", {"w": ("BF16", [2, 2], bf16)})
    np.testing.assert_array_equal(read_safetensors(tmp_path / "t.safetensors")["w"], values)


def _pair(rank: int = 2, hidden: int = 8) -> dict[str, np.ndarray[Any, Any]]:
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    return {
        f"{prefix}.lora_A.weight": np.ones((rank, hidden), np.float32),
        f"{prefix}.lora_B.weight": np.ones((hidden, rank), np.float32),
    }


@pytest.mark.parametrize(
    ("config", "tensors", "reason"),
    [
        ({"use_dora": True}, _pair(), "DoRA"),
        ({"modules_to_save": ["lm_head"]}, _pair(), "modules_to_save"),
        ({"alpha_pattern": {"q_proj": 64}}, _pair(), "alpha_pattern"),
        ({}, _pair(rank=80, hidden=96), "above the engine's max_lora_rank 64"),
        ({}, {"base_model.model.lm_head.lora_A.weight": np.ones((2, 8), np.float32)}, "not a LoRA weight"),
        ({}, dict(list(_pair().items())[:1]), "without its pair"),
    ],
    ids=["dora", "modules-to-save", "alpha-pattern", "rank", "lm-head", "half-pair"],
)
def test_adapters_the_engine_cannot_apply_the_same_way_are_refused(
    config: dict[str, Any], tensors: dict[str, np.ndarray[Any, Any]], reason: str
) -> None:
    with pytest.raises(LoraFormatError, match=reason):
        convert(tensors, {"r": 2, "lora_alpha": 4, **config}, task_id=1)


def test_task_ids_are_stable_distinct_and_positive() -> None:
    a, b = task_id_for("acme/0123456789abcdef"), task_id_for("globex/0123456789abcdef")
    assert a == task_id_for("acme/0123456789abcdef") and a != b
    assert 0 < a < 2**63 and 0 < b < 2**63


def test_the_request_tensors_have_the_production_contracts_types_and_shapes() -> None:
    lora = convert(_pair(), {"r": 2, "lora_alpha": 4}, task_id=42)
    first = {t.name(): t for t in trtllm_lora_inputs(lora, with_weights=True)}
    assert set(first) == {LORA_TASK_ID.name, LORA_WEIGHTS.name, LORA_CONFIG.name}
    assert first[LORA_TASK_ID.name].datatype() == LORA_TASK_ID.client_dtype and first[LORA_TASK_ID.name].shape() == [
        1,
        1,
    ]
    assert first[LORA_WEIGHTS.name].datatype() == "FP16" and first[LORA_WEIGHTS.name].shape() == [1, 1, 32]
    assert first[LORA_CONFIG.name].datatype() == "INT32" and first[LORA_CONFIG.name].shape() == [1, 1, 3]
    later = trtllm_lora_inputs(lora, with_weights=False)
    assert [t.name() for t in later] == [LORA_TASK_ID.name]


async def test_a_tensorrt_llm_model_gets_the_adapter_once_and_its_task_id_after(tmp_path: Path) -> None:
    """The client's side of TensorRT-LLM's LoRA cache: weights with the first request for an adapter, then the
    task id alone; an adapter name outside the adapters folder is refused before anything is sent."""
    name = "acme/0123456789abcdef"
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "peft_type": "LORA"}))
    _safetensors(
        folder / "adapter_model.safetensors",
        {key: ("F32", list(value.shape), value.tobytes()) for key, value in _pair().items()},
    )
    client = TritonClient("127.0.0.1:1", adapters_dir=tmp_path)  # never connects: the model's kind is known
    client._lora_inputs["ensemble"] = "trtllm"
    try:
        params = GenerationParams(max_tokens=4, lora_name=name, lora_model="ensemble")
        inputs, uploading = await client._request_inputs("ensemble", "hi", params)
        names = [t.name() for t in inputs]
        assert {LORA_TASK_ID.name, LORA_WEIGHTS.name, LORA_CONFIG.name} <= set(names) and "lora_name" not in names
        assert uploading == ("ensemble", task_id_for(name))
        client._lora_uploaded.add(uploading)  # what a first response does
        inputs, uploading = await client._request_inputs("ensemble", "hi", params)
        assert uploading is None and LORA_WEIGHTS.name not in [t.name() for t in inputs]
        other_model, _ = await client._request_inputs("llm_large", "hi", params)
        assert not {LORA_TASK_ID.name, "lora_name"} & {t.name() for t in other_model}
        escaping = GenerationParams(max_tokens=4, lora_name="../etc/0123456789abcdef", lora_model="ensemble")
        with pytest.raises(Exception, match="invalid adapter name"):
            await client._request_inputs("ensemble", "hi", escaping)
    finally:
        await client.close()
