"""Which precision the CPU models' forward passes run in.

On CPUs with bf16 matrix units (AMX or AVX512-BF16) torch's bf16 autocast runs the matmuls in bf16 and keeps layer
norms and softmax in fp32: 2.4x the fp32 texts/s of all-MiniLM-L6-v2 on 200-token chunks here, with cosine >= 0.9999
to the fp32 vectors (benchmarks/ingest/bench_embedder.py measures both). Elsewhere bf16 is emulated and slower, so
``auto`` keeps fp32 there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def forward_context(precision: str) -> tuple[str, Callable[[], contextlib.AbstractContextManager[object]]]:
    """(the precision chosen, a factory of the context to run each forward pass in)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" or (precision == "auto" and cpu_has_bf16_units()):
        return "bf16", lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return "fp32", contextlib.nullcontext


def weights_dtype(precision: str):
    """(the precision chosen, the torch dtype a causal LM's weights are kept in). A chat model decodes one token
    per step, so casting fp32 weights on every forward (autocast) would cost more than it saves: on bf16 hardware
    its weights are stored in bf16 (prefill of a 1000-token prompt 2.1x faster on AMX here, RAM down by a quarter)."""
    import torch

    chosen, _ = forward_context(precision)
    return chosen, torch.bfloat16 if chosen == "bf16" else torch.float32


def openvino_hint(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a precision this module chose (``bf16`` or ``fp32``)."""
    return {"bf16": "bf16", "fp32": "f32"}[precision]
