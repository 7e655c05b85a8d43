"""A PEFT LoRA adapter in the form TensorRT-LLM's LoRA cache takes (production multi-LoRA).

``ragstream finetune`` saves adapters in PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``),
which the CPU chat model loads by name. A TensorRT-LLM engine built with the LoRA plugin cannot read that folder:
the first request for an adapter carries it as two tensors, and later ones name it by task id only:

* ``lora_config`` ``[rows, 3]`` int32: one row per adapted (module, layer), ``[module_id, layer, rank]``;
* ``lora_weights`` ``[rows, width]`` fp16: that row's A (``rank x in``) then B (``out x rank``, times PEFT's
  scale ``alpha / rank``, or ``alpha / sqrt(rank)`` with rsLoRA), flattened, zero-padded to the widest row.

Only numpy is needed (the worker's environment has no torch or safetensors): the safetensors file is read here,
including bf16 tensors, which numpy has no type for.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# TensorRT-LLM's LoRA module ids for the projections of a Llama-style decoder (SmolLM2, Qwen2, Llama 3). Its names
# for the MLP are the reverse of Hugging Face's: HF's gate_proj is its mlp_h_to_4h (5), HF's up_proj its mlp_gate (7).
MODULE_IDS: Mapping[str, int] = {
    "q_proj": 1,  # attn_q
    "k_proj": 2,  # attn_k
    "v_proj": 3,  # attn_v
    "o_proj": 4,  # attn_dense
    "gate_proj": 5,  # mlp_h_to_4h
    "down_proj": 6,  # mlp_4h_to_h
    "up_proj": 7,  # mlp_gate
}

_KEY = re.compile(r"\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_DTYPES: Mapping[str, str] = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


class LoraFormatError(ValueError):
    """The adapter cannot be served by TensorRT-LLM as it is (the message says what and why)."""


@dataclass(frozen=True)
class TrtllmLora:
    """One adapter as TensorRT-LLM's request tensors, with the task id its LoRA cache keys it by."""

    task_id: int
    weights: np.ndarray[Any, np.dtype[np.float16]]
    config: np.ndarray[Any, np.dtype[np.int32]]

    @property
    def nbytes(self) -> int:
        return int(self.weights.nbytes + self.config.nbytes)

    def save(self, folder: Path) -> None:
        """TensorRT-LLM's own file names (``model.lora_weights.npy``, ``model.lora_config.npy``), batch dim first, for
        its tools and for a client that sends them without converting."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "model.lora_weights.npy", self.weights[None])
        np.save(folder / "model.lora_config.npy", self.config[None])


def task_id_for(adapter_name: str) -> int:
    """A stable 63-bit task id for an adapter name ("tenant/sha16"): the same adapter gets the same id from every
    worker, so one worker's upload serves the others' requests; 63 bits stay positive wherever it is signed."""
    digest = hashlib.sha256(adapter_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of a safetensors file (8-byte header length, JSON header, raw little-endian data); bf16 becomes
    float32 exactly (its bits are float32's upper half)."""
    data = path.read_bytes()
    if len(data) < 8:
        raise LoraFormatError(f"{path}: not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError) as exc:
        raise LoraFormatError(f"{path}: not a safetensors file ({exc})") from None
    body = memoryview(data)[8 + header_len :]
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = body[begin:end]
        if entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif entry["dtype"] in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]])
        else:
            raise LoraFormatError(f"{path}: tensor {name} has dtype {entry['dtype']}, not a float type")
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def _scale(config: Mapping[str, Any], rank: int) -> float:
    alpha = float(config.get("lora_alpha", rank))
    return alpha / (rank**0.5) if config.get("use_rslora") else alpha / rank


def convert(
    tensors: Mapping[str, np.ndarray[Any, Any]], config: Mapping[str, Any], *, task_id: int, max_rank: int = 64
) -> TrtllmLora:
    """PEFT's ``lora_A``/``lora_B`` weights and ``adapter_config.json`` as TensorRT-LLM's tensors.

    Refuses what the engine could not apply the same way: other adapter types, DoRA, LoRA biases, fully trained
    modules (``modules_to_save``), per-module alphas, modules outside :data:`MODULE_IDS`, and ranks above the
    engine's ``max_lora_rank`` (``max_rank``)."""
    problems: list[str] = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        problems.append("DoRA adapters are not supported by TensorRT-LLM's LoRA plugin")
    if config.get("lora_bias") or config.get("bias", "none") != "none":
        problems.append("adapters with trained biases are not supported")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} are full weights, not LoRA")
    if config.get("alpha_pattern"):
        problems.append("per-module lora_alpha (alpha_pattern) is not supported")
    pairs: dict[tuple[int, str], dict[str, np.ndarray[Any, Any]]] = {}
    for key, value in tensors.items():
        match = _KEY.search(key)
        if match is None:
            problems.append(f"tensor {key} is not a LoRA weight of a decoder layer")
            continue
        layer, module, side = int(match.group(1)), match.group(2), match.group(3)
        if module not in MODULE_IDS:
            problems.append(f"module {module} has no TensorRT-LLM LoRA module id")
            continue
        pairs.setdefault((layer, module), {})[side] = value
    rows: list[np.ndarray[Any, Any]] = []
    config_rows: list[tuple[int, int, int]] = []
    for (layer, module), sides in sorted(pairs.items(), key=lambda item: (item[0][0], MODULE_IDS[item[0][1]])):
        if set(sides) != {"A", "B"}:
            problems.append(f"layer {layer} {module} has lora_{''.join(sides)} without its pair")
            continue
        a, b = sides["A"], sides["B"]  # PEFT: A is [rank, in], B is [out, rank]
        rank = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != rank:
            problems.append(f"layer {layer} {module}: shapes {a.shape} and {b.shape} are not a LoRA pair")
            continue
        if rank > max_rank:
            problems.append(f"layer {layer} {module}: rank {rank} is above the engine's max_lora_rank {max_rank}")
            continue
        scaled_b = b.astype(np.float32) * _scale(config, rank)
        rows.append(np.concatenate([a.astype(np.float32).ravel(), scaled_b.ravel()]))
        config_rows.append((MODULE_IDS[module], layer, rank))
    if not rows and not problems:
        problems.append("no LoRA weights found")
    if problems:
        raise LoraFormatError("; ".join(dict.fromkeys(problems)))
    width = max(row.size for row in rows)
    weights = np.zeros((len(rows), width), dtype=np.float16)
    for i, row in enumerate(rows):
        weights[i, : row.size] = row
    return TrtllmLora(task_id=task_id, weights=weights, config=np.array(config_rows, dtype=np.int32))


def load_peft_adapter(folder: Path, *, task_id: int, max_rank: int = 64) -> TrtllmLora:
    """:func:`convert` for an adapter folder as PEFT's ``save_pretrained`` writes it."""
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise LoraFormatError(f"{folder}: no PEFT adapter (adapter_config.json and adapter_model.safetensors)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LoraFormatError(f"{config_path}: {exc}") from None
    return convert(read_safetensors(weights_path), config, task_id=task_id, max_rank=max_rank)
