"""Capacity planning for serving decoder-only LLMs with TensorRT-LLM on NVIDIA GPUs.

Every figure here is derived from a model's architecture and a GPU's data sheet rather than from per-model
rules of thumb, so a new model or GPU only needs its ``config.json`` numbers or spec sheet:

* KV cache bytes per token = 2 (K and V) x layers x KV heads x head size x element size. Grouped-query
  attention shows up through the KV head count, which is why Llama-3-8B needs a quarter of the cache a
  multi-head model of the same width would.
* Weight memory = parameter count (computed from the shapes) x storage size of the weight dtype.
* The paged KV cache gets ``kv_cache_free_gpu_mem_fraction`` of what is left after weights and an
  activation/runtime reserve -- the same rule TensorRT-LLM applies at start-up.
* Decode is memory-bandwidth bound: each step streams the weights once plus every live sequence's KV cache.
  Prefill is compute bound: 2 FLOPs per parameter per prompt token plus causal attention.

Throughput comes twice: an upper bound at data-sheet speed that measurements must never beat, and an estimate
at the efficiencies a real stack sustains (``REALISTIC``); ``tests/infra/test_capacity.py`` holds both against
NVIDIA's published TensorRT-LLM figures. Tensor-parallel communication is not modelled, so multi-GPU numbers are
optimistic.

The ``infra/engines`` build and ``triton_models/production/tensorrt_llm`` settings were sized with this
module; ``ragstream capacity`` prints :func:`render_plan`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3

#: Storage bytes per element. int4 packs two weights per byte.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
KV_DTYPES: tuple[str, ...] = ("fp16", "bf16", "fp8", "int8")
WEIGHT_DTYPES: tuple[str, ...] = ("fp16", "bf16", "fp8", "int8", "int4")

#: TensorRT-LLM's default paged-KV block size (``--tokens_per_block``); sequences occupy whole blocks.
DEFAULT_TOKENS_PER_BLOCK = 32
#: CUDA context, cuBLAS/NCCL workspaces and the runtime's own buffers, before any activations.
DEFAULT_RUNTIME_OVERHEAD_BYTES = 1 * GIB


@dataclass(frozen=True)
class ModelSpec:
    """The architecture numbers of one model, as its Hugging Face ``config.json`` states them."""

    name: str
    hf_id: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    max_position_embeddings: int
    #: The parameter count the model card publishes; tests check :func:`parameter_count` against it.
    published_params: float


@dataclass(frozen=True)
class GpuSpec:
    """Data-sheet figures for one GPU; throughput figures are dense (no 2:4 sparsity)."""

    name: str
    #: Device memory as ``nvidia-smi`` reports it (slightly below the marketing figure).
    memory_bytes: int
    bandwidth_bytes_per_s: float
    bf16_flops: float
    fp8_flops: float
    int8_ops: float


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the data-sheet bandwidth and FLOPs a real serving stack sustains."""

    bandwidth: float
    compute: float


#: The physics limit: used for upper bounds that measured throughput must never exceed.
IDEAL = Efficiency(bandwidth=1.0, compute=1.0)
#: What TensorRT-LLM typically sustains on Hopper: ~80% of HBM bandwidth in decode (memcpy-style streaming
#: reaches 85-90%, attention and small GEMMs less) and ~50% of dense tensor-core FLOPs across a whole prefill
#: (large GEMMs reach 60-70%, attention, norms and sampling pull the average down).
REALISTIC = Efficiency(bandwidth=0.8, compute=0.5)


# Values read from each model's config.json on the Hugging Face Hub.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="llama-3-8b",
            hf_id="meta-llama/Meta-Llama-3-8B-Instruct",
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=14336,
            vocab_size=128256,
            tie_word_embeddings=False,
            qkv_bias=False,
            max_position_embeddings=8192,
            published_params=8.03e9,
        ),
        ModelSpec(
            name="llama-3.1-8b",
            hf_id="meta-llama/Llama-3.1-8B-Instruct",
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=14336,
            vocab_size=128256,
            tie_word_embeddings=False,
            qkv_bias=False,
            max_position_embeddings=131072,
            published_params=8.03e9,
        ),
        ModelSpec(
            name="llama-3-70b",
            hf_id="meta-llama/Meta-Llama-3-70B-Instruct",
            num_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=28672,
            vocab_size=128256,
            tie_word_embeddings=False,
            qkv_bias=False,
            max_position_embeddings=8192,
            published_params=70.6e9,
        ),
        ModelSpec(
            name="qwen2.5-0.5b",
            hf_id="Qwen/Qwen2.5-0.5B-Instruct",
            num_layers=24,
            hidden_size=896,
            num_attention_heads=14,
            num_kv_heads=2,
            head_dim=64,
            intermediate_size=4864,
            vocab_size=151936,
            tie_word_embeddings=True,
            qkv_bias=True,
            max_position_embeddings=32768,
            published_params=0.49e9,
        ),
        ModelSpec(
            name="smollm2-135m",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            num_layers=30,
            hidden_size=576,
            num_attention_heads=9,
            num_kv_heads=3,
            head_dim=64,
            intermediate_size=1536,
            vocab_size=49152,
            tie_word_embeddings=True,
            qkv_bias=False,
            max_position_embeddings=8192,
            published_params=134.5e6,
        ),
    )
}

# NVIDIA data sheets: H100 SXM5 80 GB HBM3 at 3.35 TB/s, 989 dense BF16 TFLOPS, 1979 dense FP8 TFLOPS;
# H100 PCIe 80 GB HBM2e at 2.0 TB/s, 756 / 1513; H200 SXM 141 GB HBM3e at 4.8 TB/s with H100 SXM compute.
GPUS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        GpuSpec(
            name="h100-sxm",
            memory_bytes=81559 * MIB,
            bandwidth_bytes_per_s=3.35e12,
            bf16_flops=989.4e12,
            fp8_flops=1978.9e12,
            int8_ops=1978.9e12,
        ),
        GpuSpec(
            name="h100-pcie",
            memory_bytes=81559 * MIB,
            bandwidth_bytes_per_s=2.0e12,
            bf16_flops=756.0e12,
            fp8_flops=1513.0e12,
            int8_ops=1513.0e12,
        ),
        GpuSpec(
            name="h200",
            memory_bytes=143771 * MIB,
            bandwidth_bytes_per_s=4.8e12,
            bf16_flops=989.4e12,
            fp8_flops=1978.9e12,
            int8_ops=1978.9e12,
        ),
    )
}


def get_model(name: str) -> ModelSpec:
    """Look a catalog model up by name, case-insensitively, with a helpful error."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def get_gpu(name: str) -> GpuSpec:
    """Look a catalog GPU up by name, case-insensitively, with a helpful error."""
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; known: {', '.join(sorted(GPUS))}") from None


def dtype_bytes(dtype: str, allowed: Sequence[str] = tuple(DTYPE_BYTES)) -> float:
    """Bytes per element, rejecting dtypes that make no sense in the caller's role."""
    if dtype not in allowed:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(allowed)}")
    return DTYPE_BYTES[dtype]


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------


def kv_heads_per_gpu(model: ModelSpec, tensor_parallel: int = 1) -> int:
    """KV heads each GPU stores: split across ranks, replicated once there are more ranks than heads."""
    if tensor_parallel < 1:
        raise ValueError("tensor_parallel must be >= 1")
    return math.ceil(model.num_kv_heads / tensor_parallel)


def kv_cache_bytes_per_token(model: ModelSpec, kv_dtype: str = "fp16", tensor_parallel: int = 1) -> int:
    """KV cache one token occupies on one GPU: 2 (K, V) x layers x KV heads x head size x element size."""
    element = dtype_bytes(kv_dtype, KV_DTYPES)
    heads = kv_heads_per_gpu(model, tensor_parallel)
    return round(2 * model.num_layers * heads * model.head_dim * element)


@dataclass(frozen=True)
class ParameterBreakdown:
    """Parameters split by how quantization treats them."""

    #: Token embedding table (also the output head when embeddings are tied).
    embedding: int
    #: Separate output projection; zero when tied to the embedding.
    lm_head: int
    #: Weight matrices of attention and MLP blocks -- the part FP8/INT8/INT4 quantization stores narrowly.
    linear: int
    #: Norm scales and attention biases, kept in 16-bit.
    small: int

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.small


def parameter_breakdown(model: ModelSpec) -> ParameterBreakdown:
    """Count parameters of a Llama/Qwen2-style decoder from its shapes."""
    h = model.hidden_size
    q_width = model.num_attention_heads * model.head_dim
    kv_width = model.num_kv_heads * model.head_dim
    attention = h * q_width + 2 * h * kv_width + q_width * h
    mlp = 3 * h * model.intermediate_size  # gate, up and down projections
    bias = (q_width + 2 * kv_width) if model.qkv_bias else 0
    norms = 2 * h  # input and post-attention RMSNorm
    embedding = model.vocab_size * h
    return ParameterBreakdown(
        embedding=embedding,
        lm_head=0 if model.tie_word_embeddings else embedding,
        linear=model.num_layers * (attention + mlp),
        small=model.num_layers * (bias + norms) + h,  # + final norm
    )


def parameter_count(model: ModelSpec) -> int:
    """Total parameters, computed from the architecture."""
    return parameter_breakdown(model).total


def weight_bytes(model: ModelSpec, weight_dtype: str = "bf16") -> float:
    """Bytes the weights occupy across all GPUs.

    Quantized formats (fp8, int8, int4) apply to the block linear layers only; ModelOpt leaves the embedding,
    the output head and norms in the 16-bit compute dtype, and so does this estimate.
    """
    narrow = dtype_bytes(weight_dtype, WEIGHT_DTYPES)
    parts = parameter_breakdown(model)
    wide = DTYPE_BYTES["bf16"]
    return parts.linear * narrow + (parts.embedding + parts.lm_head + parts.small) * wide


def weight_bytes_read_per_step(model: ModelSpec, weight_dtype: str = "bf16") -> float:
    """Weight bytes one forward step streams from HBM: all but the embedding table, of which it reads a row
    per token (a tied embedding is still read in full, as the output head)."""
    total = weight_bytes(model, weight_dtype)
    if model.tie_word_embeddings:
        return total
    return total - parameter_breakdown(model).embedding * DTYPE_BYTES["bf16"]


def activation_reserve_bytes(
    model: ModelSpec,
    max_num_tokens: int = 8192,
    max_batch_size: int = 256,
    runtime_overhead_bytes: float = DEFAULT_RUNTIME_OVERHEAD_BYTES,
) -> float:
    """Memory kept for activations and the runtime, which the KV cache fraction is taken after.

    The largest live activations of one step are the gated-MLP intermediate (gate and up, 2 x FFN width) and a
    few hidden-size buffers for ``max_num_tokens`` tokens in 16-bit, plus fp32 logits for each sequence's last
    token.
    """
    activations = max_num_tokens * (2 * model.intermediate_size + 4 * model.hidden_size) * DTYPE_BYTES["bf16"]
    logits = max_batch_size * model.vocab_size * DTYPE_BYTES["fp32"]
    return runtime_overhead_bytes + activations + logits


LORA_MODULES = ("q", "k", "v", "o")  # attention projections, what `ragstream finetune` adapts by default


def lora_adapter_bytes(
    model: ModelSpec, rank: int = 8, modules: Sequence[str] = LORA_MODULES, dtype: str = "fp16"
) -> float:
    """Memory of one LoRA adapter: per layer and adapted projection, A (rank x in) plus B (out x rank)."""
    if rank < 1:
        raise ValueError("LoRA rank must be >= 1")
    q_out = model.num_attention_heads * model.head_dim
    kv_out = model.num_kv_heads * model.head_dim
    shapes = {
        "q": (model.hidden_size, q_out),
        "k": (model.hidden_size, kv_out),
        "v": (model.hidden_size, kv_out),
        "o": (q_out, model.hidden_size),
        "gate": (model.hidden_size, model.intermediate_size),
        "up": (model.hidden_size, model.intermediate_size),
        "down": (model.intermediate_size, model.hidden_size),
    }
    unknown = sorted(set(modules) - set(shapes))
    if unknown:
        raise ValueError(f"unknown LoRA modules {unknown}; known: {sorted(shapes)}")
    per_layer = sum(rank * (shapes[m][0] + shapes[m][1]) for m in modules)
    return model.num_layers * per_layer * dtype_bytes(dtype)


def kv_cache_budget_bytes(
    gpu: GpuSpec, weight_bytes_per_gpu: float, reserve_bytes: float, kv_cache_free_gpu_mem_fraction: float
) -> float:
    """KV cache memory per GPU: the configured fraction of what weights and the reserve leave free."""
    if not 0.0 < kv_cache_free_gpu_mem_fraction <= 1.0:
        raise ValueError("kv_cache_free_gpu_mem_fraction must be in (0, 1]")
    free = gpu.memory_bytes - weight_bytes_per_gpu - reserve_bytes
    return max(0.0, free * kv_cache_free_gpu_mem_fraction)


def blocks_for(tokens: int, tokens_per_block: int = DEFAULT_TOKENS_PER_BLOCK) -> int:
    """Paged-KV blocks a sequence of ``tokens`` occupies."""
    return math.ceil(tokens / tokens_per_block)


def max_concurrent_sequences(
    kv_budget_bytes: float,
    kv_bytes_per_token: int,
    sequence_tokens: int,
    tokens_per_block: int = DEFAULT_TOKENS_PER_BLOCK,
) -> int:
    """Sequences of ``sequence_tokens`` (prompt + answer) whose KV blocks fit the budget at once."""
    if sequence_tokens < 1:
        raise ValueError("sequence_tokens must be >= 1")
    block_bytes = tokens_per_block * kv_bytes_per_token
    total_blocks = int(kv_budget_bytes // block_bytes)
    return total_blocks // blocks_for(sequence_tokens, tokens_per_block)


# ---------------------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------------------


def peak_flops(gpu: GpuSpec, weight_dtype: str) -> float:
    """Dense tensor-core rate of the math the weight format runs in.

    FP8 engines run FP8 GEMMs (W8A8); INT8 means SmoothQuant W8A8; INT4 is weight-only (AWQ/GPTQ, W4A16), so
    its GEMMs run in 16-bit like the unquantized model.
    """
    dtype_bytes(weight_dtype, WEIGHT_DTYPES)
    if weight_dtype == "fp8":
        return gpu.fp8_flops
    if weight_dtype == "int8":
        return gpu.int8_ops
    return gpu.bf16_flops


def prefill_flops(model: ModelSpec, prompt_tokens: int) -> float:
    """FLOPs to encode a prompt: 2 per weight per token, causal attention, and one output-head pass."""
    parts = parameter_breakdown(model)
    q_width = model.num_attention_heads * model.head_dim
    # QK^T and AV are 2*S*S*width each per layer; the causal mask halves them.
    attention = 2 * model.num_layers * prompt_tokens * prompt_tokens * q_width
    head = 2 * model.vocab_size * model.hidden_size
    return 2 * parts.linear * prompt_tokens + attention + head


def decode_flops(model: ModelSpec, batch: int, context_tokens: float) -> float:
    """FLOPs of one decode step for ``batch`` sequences attending over ``context_tokens`` each."""
    parts = parameter_breakdown(model)
    q_width = model.num_attention_heads * model.head_dim
    attention = 4 * model.num_layers * context_tokens * q_width
    head = 2 * model.vocab_size * model.hidden_size
    return batch * (2 * parts.linear + attention + head)


@dataclass(frozen=True)
class StepCost:
    """Bytes and FLOPs one GPU spends on a decode step."""

    bytes: float
    flops: float


def decode_step_cost(
    model: ModelSpec,
    *,
    batch: int,
    context_tokens: float,
    weight_dtype: str,
    kv_dtype: str,
    gpus: int = 1,
) -> StepCost:
    """Per-GPU traffic of one decode step: weights once, plus every sequence's KV cache."""
    kv = kv_cache_bytes_per_token(model, kv_dtype, gpus)
    weights = weight_bytes_read_per_step(model, weight_dtype) / gpus
    return StepCost(
        bytes=weights + batch * context_tokens * kv,
        flops=decode_flops(model, batch, context_tokens) / gpus,
    )


def decode_step_seconds(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    batch: int,
    context_tokens: float,
    weight_dtype: str,
    kv_dtype: str,
    gpus: int = 1,
    efficiency: Efficiency = REALISTIC,
) -> float:
    """Time of one decode step: the slower of streaming its bytes and computing its FLOPs."""
    cost = decode_step_cost(
        model,
        batch=batch,
        context_tokens=context_tokens,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        gpus=gpus,
    )
    memory_time = cost.bytes / (gpu.bandwidth_bytes_per_s * efficiency.bandwidth)
    compute_time = cost.flops / (peak_flops(gpu, weight_dtype) * efficiency.compute)
    return max(memory_time, compute_time)


def ttft_seconds(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    input_tokens: int,
    weight_dtype: str,
    kv_dtype: str,
    gpus: int = 1,
    efficiency: Efficiency = REALISTIC,
) -> float:
    """Time to first token on an idle server: one prefill pass, compute bound for real prompts but never
    faster than reading the weights once."""
    compute = prefill_flops(model, input_tokens) / (gpus * peak_flops(gpu, weight_dtype) * efficiency.compute)
    traffic = weight_bytes_read_per_step(model, weight_dtype) / gpus + input_tokens * kv_cache_bytes_per_token(
        model, kv_dtype, gpus
    )
    memory = traffic / (gpu.bandwidth_bytes_per_s * efficiency.bandwidth)
    return max(compute, memory)


def steady_state_throughput(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    batch: int,
    input_tokens: int,
    output_tokens: int,
    weight_dtype: str,
    kv_dtype: str,
    gpus: int = 1,
    efficiency: Efficiency = REALISTIC,
    overlap: bool = False,
) -> float:
    """Output tokens per second across all GPUs with ``batch`` sequences always in flight.

    One cycle serves ``batch`` requests: their prefills plus ``output_tokens`` decode steps at the mean
    context length. With ``overlap`` the cycle takes only as long as its total bytes or total FLOPs need
    (prefill hidden entirely under bandwidth-bound decode) -- an upper bound. Without it, prefill time adds
    to decode time, which is closer to what in-flight batching achieves.
    """
    if batch < 1:
        return 0.0
    mean_context = input_tokens + output_tokens / 2
    step = decode_step_cost(
        model,
        batch=batch,
        context_tokens=mean_context,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        gpus=gpus,
    )
    bandwidth = gpu.bandwidth_bytes_per_s * efficiency.bandwidth
    flops_rate = peak_flops(gpu, weight_dtype) * efficiency.compute
    prefill = batch * prefill_flops(model, input_tokens) / gpus
    if overlap:
        cycle = max(output_tokens * step.bytes / bandwidth, (output_tokens * step.flops + prefill) / flops_rate)
    else:
        step_time = max(step.bytes / bandwidth, step.flops / flops_rate)
        cycle = output_tokens * step_time + prefill / flops_rate
    return batch * output_tokens / cycle


# ---------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityPlan:
    """Everything :func:`plan` worked out for one model, GPU type and request shape."""

    model: ModelSpec
    gpu: GpuSpec
    gpus: int
    input_tokens: int
    output_tokens: int
    weight_dtype: str
    kv_dtype: str
    kv_cache_free_gpu_mem_fraction: float
    max_batch_size: int
    parameters: int
    weight_bytes_per_gpu: float
    reserve_bytes_per_gpu: float
    kv_bytes_per_token: int
    kv_bytes_per_token_per_gpu: int
    kv_budget_bytes_per_gpu: float
    kv_capacity_tokens: int
    max_concurrent_sequences: int
    requested_concurrency: int | None
    #: Sequences the estimate assumes in flight: the requested concurrency, capped by KV and batch limits.
    batch: int
    decode_step_seconds: float
    decode_bound: str
    per_sequence_tokens_per_second: float
    decode_tokens_per_second: float
    ttft_seconds: float
    throughput_tokens_per_second: float
    throughput_upper_bound_tokens_per_second: float
    warnings: tuple[str, ...]
    #: LoRA adapters held on the GPU at once (the TensorRT-LLM LoRA cache), and their memory per GPU.
    lora_adapters: int = 0
    lora_rank: int = 0
    lora_bytes_per_gpu: float = 0.0

    @property
    def fits(self) -> bool:
        """Whether at least one full-length sequence can be served."""
        return self.max_concurrent_sequences >= 1


def plan(
    model: str | ModelSpec,
    gpu: str | GpuSpec,
    *,
    gpus: int = 1,
    input_tokens: int = 1024,
    output_tokens: int = 256,
    kv_dtype: str = "fp8",
    weight_dtype: str = "fp8",
    concurrency: int | None = None,
    kv_cache_free_gpu_mem_fraction: float = 0.9,
    max_batch_size: int = 256,
    max_num_tokens: int = 8192,
    tokens_per_block: int = DEFAULT_TOKENS_PER_BLOCK,
    efficiency: Efficiency = REALISTIC,
    lora_adapters: int = 0,
    lora_rank: int = 8,
) -> CapacityPlan:
    """Size a tensor-parallel deployment of ``model`` on ``gpus`` GPUs for one request shape.

    ``concurrency`` is the number of requests expected in flight; by default the plan assumes as many as the
    KV cache and ``max_batch_size`` admit, which is the throughput-maximising operating point. ``lora_adapters``
    LoRA adapters of rank ``lora_rank`` (attention projections, fp16, split like the weights over tensor-parallel
    GPUs) are held in GPU memory beside the weights and come out of the KV cache budget.
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    device = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
    if gpus < 1:
        raise ValueError("gpus must be >= 1")
    if input_tokens < 1 or output_tokens < 1:
        raise ValueError("input_tokens and output_tokens must be >= 1")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if max_batch_size < 1 or max_num_tokens < 1 or tokens_per_block < 1:
        raise ValueError("max_batch_size, max_num_tokens and tokens_per_block must be >= 1")
    dtype_bytes(kv_dtype, KV_DTYPES)
    dtype_bytes(weight_dtype, WEIGHT_DTYPES)

    warnings: list[str] = []
    sequence = input_tokens + output_tokens
    if sequence > spec.max_position_embeddings:
        warnings.append(f"{sequence} tokens per sequence exceed the model's context of {spec.max_position_embeddings}")
    if spec.num_kv_heads % gpus and gpus > 1:
        warnings.append(f"{spec.num_kv_heads} KV heads do not split evenly over {gpus} GPUs; heads are replicated")

    if lora_adapters < 0:
        raise ValueError("lora_adapters must be >= 0")
    weights = weight_bytes(spec, weight_dtype) / gpus
    lora = lora_adapters * lora_adapter_bytes(spec, lora_rank) / gpus if lora_adapters else 0.0
    reserve = activation_reserve_bytes(spec, max_num_tokens, max_batch_size) + lora
    kv_per_gpu = kv_cache_bytes_per_token(spec, kv_dtype, gpus)
    budget = kv_cache_budget_bytes(device, weights, reserve, kv_cache_free_gpu_mem_fraction)
    capacity_blocks = int(budget // (tokens_per_block * kv_per_gpu))
    max_sequences = max_concurrent_sequences(budget, kv_per_gpu, sequence, tokens_per_block)
    if weights + reserve >= device.memory_bytes:
        warnings.append(
            f"weights ({weights / GIB:.1f} GiB) and reserve ({reserve / GIB:.1f} GiB) per GPU exceed "
            f"{device.memory_bytes / GIB:.1f} GiB; use more GPUs or a narrower weight dtype"
        )
    elif max_sequences < 1:
        warnings.append("the KV cache cannot hold a single sequence of this length")

    batch = min(max_sequences, max_batch_size)
    if concurrency is not None:
        if concurrency > batch:
            warnings.append(
                f"concurrency {concurrency} exceeds the {batch} sequences that fit; the rest queue and add latency"
            )
        batch = min(batch, concurrency)

    if batch >= 1:
        mean_context = input_tokens + output_tokens / 2
        cost = decode_step_cost(
            spec, batch=batch, context_tokens=mean_context, weight_dtype=weight_dtype, kv_dtype=kv_dtype, gpus=gpus
        )
        memory_time = cost.bytes / (device.bandwidth_bytes_per_s * efficiency.bandwidth)
        compute_time = cost.flops / (peak_flops(device, weight_dtype) * efficiency.compute)
        step = max(memory_time, compute_time)
        bound = "memory bandwidth" if memory_time >= compute_time else "compute"
        per_sequence = 1.0 / step
        throughput, upper = (
            steady_state_throughput(
                spec,
                device,
                batch=batch,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                weight_dtype=weight_dtype,
                kv_dtype=kv_dtype,
                gpus=gpus,
                efficiency=assumed,
                overlap=overlap,
            )
            for assumed, overlap in ((efficiency, False), (IDEAL, True))
        )
        ttft = ttft_seconds(
            spec,
            device,
            input_tokens=input_tokens,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            gpus=gpus,
            efficiency=efficiency,
        )
    else:
        step = per_sequence = throughput = upper = ttft = 0.0
        bound = "does not fit"

    return CapacityPlan(
        model=spec,
        gpu=device,
        gpus=gpus,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
        max_batch_size=max_batch_size,
        parameters=parameter_count(spec),
        weight_bytes_per_gpu=weights,
        reserve_bytes_per_gpu=reserve,
        kv_bytes_per_token=kv_cache_bytes_per_token(spec, kv_dtype),
        kv_bytes_per_token_per_gpu=kv_per_gpu,
        kv_budget_bytes_per_gpu=budget,
        kv_capacity_tokens=capacity_blocks * tokens_per_block,
        max_concurrent_sequences=max_sequences,
        requested_concurrency=concurrency,
        batch=max(batch, 0),
        decode_step_seconds=step,
        decode_bound=bound,
        per_sequence_tokens_per_second=per_sequence,
        decode_tokens_per_second=batch * per_sequence,
        ttft_seconds=ttft,
        throughput_tokens_per_second=throughput,
        throughput_upper_bound_tokens_per_second=upper,
        warnings=tuple(warnings),
        lora_adapters=lora_adapters,
        lora_rank=lora_rank if lora_adapters else 0,
        lora_bytes_per_gpu=lora,
    )


def format_plan(result: CapacityPlan) -> str:
    """Human-readable report of a plan, one fact per line."""
    m, g = result.model, result.gpu
    lines = [
        f"{m.name} ({m.hf_id}) on {result.gpus} x {g.name}",
        f"  request shape        {result.input_tokens} in + {result.output_tokens} out tokens",
        f"  weights              {result.weight_dtype}, {result.parameters / 1e9:.2f}B params, "
        f"{result.weight_bytes_per_gpu / GIB:.2f} GiB per GPU",
        f"  activation reserve   {result.reserve_bytes_per_gpu / GIB:.2f} GiB per GPU"
        + (
            f" (with {result.lora_adapters} LoRA adapters of rank {result.lora_rank}: "
            f"{result.lora_bytes_per_gpu / 2**20:.1f} MiB)"
            if result.lora_adapters
            else ""
        ),
        f"  KV cache per token   {result.kv_bytes_per_token / 1024:.1f} KiB ({result.kv_dtype}; "
        f"{m.num_layers} layers x {m.num_kv_heads} KV heads x {m.head_dim} head dim), "
        f"{result.kv_bytes_per_token_per_gpu / 1024:.1f} KiB per GPU",
        f"  KV cache budget      {result.kv_budget_bytes_per_gpu / GIB:.2f} GiB per GPU at "
        f"kv_cache_free_gpu_mem_fraction={result.kv_cache_free_gpu_mem_fraction:g} "
        f"= {result.kv_capacity_tokens:,} tokens",
        f"  max concurrent seqs  {result.max_concurrent_sequences:,}",
    ]
    if result.fits:
        lines += [
            f"  planned batch        {result.batch} (max_batch_size {result.max_batch_size})",
            f"  decode step          {result.decode_step_seconds * 1e3:.2f} ms ({result.decode_bound} bound)",
            f"  per-sequence speed   {result.per_sequence_tokens_per_second:,.1f} tokens/s",
            f"  decode throughput    {result.decode_tokens_per_second:,.0f} tokens/s",
            f"  TTFT (idle)          {result.ttft_seconds * 1e3:.1f} ms",
            f"  output throughput    {result.throughput_tokens_per_second:,.0f} tokens/s with prefill "
            f"(upper bound {result.throughput_upper_bound_tokens_per_second:,.0f})",
        ]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    return "\n".join(lines)


def render_plan(
    model: str | ModelSpec = "llama-3-8b",
    gpu: str | GpuSpec = "h100-sxm",
    *,
    gpus: int = 1,
    input_tokens: int = 1024,
    output_tokens: int = 256,
    kv_dtype: str = "fp8",
    weight_dtype: str = "fp8",
    concurrency: int | None = None,
    kv_cache_free_gpu_mem_fraction: float = 0.9,
    max_batch_size: int = 256,
) -> str:
    """Plan and format in one call, for ``ragstream capacity``."""
    return format_plan(
        plan(
            model,
            gpu,
            gpus=gpus,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            kv_dtype=kv_dtype,
            weight_dtype=weight_dtype,
            concurrency=concurrency,
            kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
            max_batch_size=max_batch_size,
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragstream capacity",
        description="Estimate KV cache capacity, concurrency, throughput and TTFT for an LLM deployment.",
    )
    parser.add_argument("--model", default="llama-3-8b", choices=sorted(MODELS))
    parser.add_argument("--gpu", default="h100-sxm", choices=sorted(GPUS))
    parser.add_argument("--gpus", type=int, default=1, help="tensor-parallel GPUs (default: 1)")
    parser.add_argument("--input-tokens", type=int, default=1024, help="prompt tokens per request")
    parser.add_argument("--output-tokens", type=int, default=256, help="generated tokens per request")
    parser.add_argument("--kv-dtype", default="fp8", choices=KV_DTYPES)
    parser.add_argument("--weight-dtype", default="fp8", choices=WEIGHT_DTYPES)
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: max)")
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--lora-adapters", type=int, default=0, help="LoRA adapters held on the GPU at once")
    parser.add_argument("--lora-rank", type=int, default=8, help="their rank (default: 8, ragstream finetune's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print a capacity plan; exit status 1 when the model does not fit, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    try:
        result = plan(
            args.model,
            args.gpu,
            gpus=args.gpus,
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
            kv_dtype=args.kv_dtype,
            weight_dtype=args.weight_dtype,
            concurrency=args.concurrency,
            kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
            max_batch_size=args.max_batch_size,
            lora_adapters=args.lora_adapters,
            lora_rank=args.lora_rank,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(result))
    return 0 if result.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
