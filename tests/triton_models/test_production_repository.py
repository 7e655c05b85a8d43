"""Static checks of every Triton model configuration under ``triton_models/``.

Each ``config.pbtxt`` is parsed with the protobuf schema Triton itself loads (``model_config_pb2`` from
tritonclient), so a typo that would stop the server at start-up fails here, without a GPU or a server. On top of
parsing, the tests hold the configs to ragstream's tensor contract (``schemas/triton.py``), check that every
ensemble is wired to models and tensors that exist, and pin the engine settings the production deployment
relies on (streaming, KV-cache reuse, chunked prefill). The ``*_problems`` helpers return what is wrong instead
of asserting, so the last tests can show they reject deliberately broken configs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from infra.capacity import get_model, lora_adapter_bytes, plan
from schemas.triton import (
    EMBEDDING_INPUTS,
    EMBEDDING_OUTPUTS,
    GENERATION_INPUTS,
    GENERATION_OUTPUTS,
    PROMPT_TOKENS,
    TRTLLM_LORA_INPUTS,
    TensorSpec,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_ROOT = REPO_ROOT / "triton_models"
PRODUCTION = MODELS_ROOT / "production"
CPU = MODELS_ROOT / "cpu"
BUILD_SCRIPT = REPO_ROOT / "infra" / "engines" / "build_engines.sh"

ALL_CONFIGS = sorted(MODELS_ROOT.glob("**/config.pbtxt"))
PRODUCTION_CONFIGS = sorted(PRODUCTION.glob("*/config.pbtxt"))
CPU_CONFIGS = sorted(CPU.glob("*/config.pbtxt"))

# schemas/triton.py has no reranker table yet; this is the reranker's contract until it does.
RERANK_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("query", "TYPE_STRING", (1,)),
    TensorSpec("passages", "TYPE_STRING", (-1,)),
)
RERANK_OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec("scores", "TYPE_FP32", (-1,)),)

PRODUCTION_MODELS = {
    "ensemble",
    "preprocessing",
    "tensorrt_llm",
    "postprocessing",
    "tensorrt_llm_bls",
    "embedder",
    "embedder_tokenizer",
    "embedder_onnx",
    "reranker",
    "reranker_tokenizer",
    "reranker_onnx",
}


def _rel(path: Path) -> str:
    return str(path.relative_to(MODELS_ROOT))


# ---------------------------------------------------------------------------------------------------------
# Helpers: parse, and list problems
# ---------------------------------------------------------------------------------------------------------


def parse_config(text: str) -> Any:
    """A ``ModelConfig`` message; raises ``text_format.ParseError`` on anything Triton would reject."""
    return text_format.Parse(text, mc.ModelConfig())


def load_config(path: Path) -> Any:
    return parse_config(path.read_text(encoding="utf-8"))


def load_repository(root: Path) -> dict[str, Any]:
    """Model folder name -> parsed config for one model repository."""
    return {path.parent.name: load_config(path) for path in sorted(root.glob("*/config.pbtxt"))}


def dtype(value: int) -> str:
    return str(mc.DataType.Name(value))


def dims_compatible(left: Sequence[int], right: Sequence[int]) -> bool:
    """Same rank, and each dimension equal or variable (-1) on one side -- Triton's rule for ensembles."""
    return len(left) == len(right) and all(a == b or -1 in (a, b) for a, b in zip(left, right, strict=True))


def file_problems(path: Path) -> list[str]:
    """What is wrong with a config file as a file: Triton requires ``name`` to equal the folder name, and a
    ``${...}`` left from upstream's templates would reach the backend as a literal string."""
    text = path.read_text(encoding="utf-8")
    problems = []
    config = parse_config(text)
    if config.name != path.parent.name:
        problems.append(f"name {config.name!r} does not match its folder {path.parent.name!r}")
    if "${" in text:
        problems.append("unfilled ${...} template placeholder")
    if not (config.backend or config.platform):
        problems.append("neither backend nor platform is set")
    return problems


def contract_problems(config: Any, inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec]) -> list[str]:
    """Where a model's declared tensors differ from a contract: missing, other type, other shape, or (inputs)
    a different optional flag. Extra tensors are allowed."""
    problems: list[str] = []
    for kind, declared_list, specs in (("input", config.input, inputs), ("output", config.output, outputs)):
        declared = {tensor.name: tensor for tensor in declared_list}
        for spec in specs:
            tensor = declared.get(spec.name)
            if tensor is None:
                problems.append(f"{config.name}: missing {kind} {spec.name!r}")
                continue
            if dtype(tensor.data_type) != spec.data_type:
                problems.append(
                    f"{config.name}: {kind} {spec.name!r} is {dtype(tensor.data_type)}, contract says {spec.data_type}"
                )
            if tuple(tensor.dims) != spec.dims:
                problems.append(f"{config.name}: {kind} {spec.name!r} dims {list(tensor.dims)} != {list(spec.dims)}")
            if kind == "input" and tensor.optional != spec.optional:
                problems.append(
                    f"{config.name}: input {spec.name!r} optional={tensor.optional}, contract {spec.optional}"
                )
    return problems


def ensemble_problems(ensemble: Any, models: Mapping[str, Any]) -> list[str]:
    """Wiring errors Triton reports when it loads an ensemble, checked without loading it.

    Every step must name a model of the same repository whose batch limit is at least the ensemble's; every
    ``input_map``/``output_map`` key must be a tensor that model declares; every value fed to a model must be an
    ensemble input or some step's output, of the same type and a compatible shape; every required model input
    must be fed; and every ensemble output must be produced by a step.
    """
    name = ensemble.name
    if ensemble.platform != "ensemble":
        return [f"{name}: platform is {ensemble.platform!r}, not 'ensemble'"]
    steps = list(ensemble.ensemble_scheduling.step)
    if not steps:
        return [f"{name}: no ensemble_scheduling steps"]

    problems: list[str] = []
    available: dict[str, tuple[str, tuple[int, ...]]] = {
        tensor.name: (dtype(tensor.data_type), tuple(tensor.dims)) for tensor in ensemble.input
    }
    for step in steps:
        model = models.get(step.model_name)
        if model is None:
            problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
            continue
        outputs = {tensor.name: tensor for tensor in model.output}
        for key, value in step.output_map.items():
            if key not in outputs:
                problems.append(f"{name}: {step.model_name} has no output {key!r}")
            elif value in available:
                problems.append(f"{name}: tensor {value!r} is produced twice")
            else:
                available[value] = (dtype(outputs[key].data_type), tuple(outputs[key].dims))

    for step in steps:
        model = models.get(step.model_name)
        if model is None:
            continue
        if ensemble.max_batch_size > model.max_batch_size:
            problems.append(
                f"{name}: max_batch_size {ensemble.max_batch_size} exceeds {step.model_name}'s {model.max_batch_size}"
            )
        inputs = {tensor.name: tensor for tensor in model.input}
        for key, value in step.input_map.items():
            if key not in inputs:
                problems.append(f"{name}: {step.model_name} has no input {key!r}")
                continue
            if value not in available:
                problems.append(f"{name}: {step.model_name}.{key} reads {value!r}, which nothing produces")
                continue
            source_type, source_dims = available[value]
            if source_type != dtype(inputs[key].data_type):
                problems.append(
                    f"{name}: {value!r} is {source_type} but {step.model_name}.{key} takes "
                    f"{dtype(inputs[key].data_type)}"
                )
            if not dims_compatible(source_dims, tuple(inputs[key].dims)):
                problems.append(
                    f"{name}: {value!r} dims {list(source_dims)} do not fit {step.model_name}.{key} "
                    f"dims {list(inputs[key].dims)}"
                )
        for tensor in model.input:
            if not tensor.optional and tensor.name not in step.input_map:
                problems.append(f"{name}: required input {step.model_name}.{tensor.name} is not fed")

    produced = {value for step in steps for value in step.output_map.values()}
    for tensor in ensemble.output:
        if tensor.name not in produced:
            problems.append(f"{name}: output {tensor.name!r} is not produced by any step")
        elif tensor.name in available and available[tensor.name][0] != dtype(tensor.data_type):
            problems.append(f"{name}: output {tensor.name!r} type differs from the step that produces it")
    return problems


def parameter(config: Any, key: str) -> str | None:
    value = config.parameters.get(key)
    return None if value is None else str(value.string_value)


# ---------------------------------------------------------------------------------------------------------
# Every config in the tree
# ---------------------------------------------------------------------------------------------------------


def test_production_repository_is_complete() -> None:
    assert {path.parent.name for path in PRODUCTION_CONFIGS} == PRODUCTION_MODELS


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_rel)
def test_config_parses_and_is_named_after_its_folder(path: Path) -> None:
    assert file_problems(path) == []


@pytest.mark.parametrize("path", PRODUCTION_CONFIGS, ids=_rel)
def test_production_model_has_a_version_directory(path: Path) -> None:
    assert (path.parent / "1").is_dir(), "Triton serves nothing from a model without a version folder"


def _ensembles() -> list[tuple[Path, str]]:
    found = []
    for path in ALL_CONFIGS:
        if load_config(path).platform == "ensemble":
            found.append((path.parent.parent, path.parent.name))
    return found


@pytest.mark.parametrize(("repository", "model"), _ensembles(), ids=lambda value: str(value).split("/")[-1])
def test_ensemble_wiring(repository: Path, model: str) -> None:
    models = load_repository(repository)
    assert ensemble_problems(models[model], models) == []


# ---------------------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------------------


def test_production_ensemble_serves_the_generation_contract() -> None:
    ensemble = load_config(PRODUCTION / "ensemble" / "config.pbtxt")
    assert contract_problems(ensemble, GENERATION_INPUTS, GENERATION_OUTPUTS) == []


def test_bls_serves_the_generation_contract_too() -> None:
    bls = load_config(PRODUCTION / "tensorrt_llm_bls" / "config.pbtxt")
    assert contract_problems(bls, GENERATION_INPUTS, GENERATION_OUTPUTS) == []


def test_cpu_generation_models_serve_the_generation_contract() -> None:
    generators = [path for path in CPU_CONFIGS if load_config(path).name.startswith("llm")]
    assert generators, "no triton_models/cpu/llm* model"
    problems = [
        p for path in generators for p in contract_problems(load_config(path), GENERATION_INPUTS, GENERATION_OUTPUTS)
    ]
    assert problems == []


def test_the_ensemble_and_the_cpu_chat_models_report_the_prompt_token_count() -> None:
    """The usage record's prompt_tokens: the BLS model (NVIDIA's code, as shipped) does not report it."""
    configs = [PRODUCTION / "ensemble" / "config.pbtxt"]
    configs += [path for path in CPU_CONFIGS if load_config(path).name.startswith("llm")]
    assert [p for path in configs for p in contract_problems(load_config(path), [], [PROMPT_TOKENS])] == []


@pytest.mark.parametrize("path", [p for p in ALL_CONFIGS if p.parent.name == "embedder"], ids=_rel)
def test_every_embedder_serves_the_embedding_contract(path: Path) -> None:
    assert contract_problems(load_config(path), EMBEDDING_INPUTS, EMBEDDING_OUTPUTS) == []


def test_gpu_reranker_serves_the_rerank_contract() -> None:
    reranker = load_config(PRODUCTION / "reranker" / "config.pbtxt")
    assert contract_problems(reranker, RERANK_INPUTS, RERANK_OUTPUTS) == []


@pytest.mark.parametrize("model", ["embedder_onnx", "reranker_onnx"])
def test_gpu_encoders_run_on_the_gpu_with_dynamic_batching(model: str) -> None:
    config = load_config(PRODUCTION / model / "config.pbtxt")
    assert config.backend == "onnxruntime"
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds > 0


# ---------------------------------------------------------------------------------------------------------
# Engine settings production relies on
# ---------------------------------------------------------------------------------------------------------


def test_tensorrt_llm_streams_with_kv_reuse_and_chunked_context() -> None:
    config = load_config(PRODUCTION / "tensorrt_llm" / "config.pbtxt")
    assert config.backend == "tensorrtllm"
    assert config.model_transaction_policy.decoupled is True
    assert parameter(config, "gpt_model_type") == "inflight_fused_batching"
    assert parameter(config, "enable_kv_cache_reuse") == "true"
    assert parameter(config, "enable_chunked_context") == "true"
    assert parameter(config, "batch_scheduler_policy") in {"guaranteed_no_evict", "max_utilization"}
    assert (parameter(config, "gpt_model_path") or "").startswith("/engines/llama3-8b-fp8/")
    fraction = float(parameter(config, "kv_cache_free_gpu_mem_fraction") or "nan")
    assert 0.5 <= fraction < 1.0
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.max_batch_size == 64


def test_streaming_models_are_decoupled_and_tokenizers_point_at_the_volume() -> None:
    models = load_repository(PRODUCTION)
    assert models["tensorrt_llm_bls"].model_transaction_policy.decoupled is True
    for name in ("preprocessing", "postprocessing", "embedder_tokenizer", "reranker_tokenizer"):
        assert (parameter(models[name], "tokenizer_dir") or "").startswith("/models/tokenizer/"), name
    assert parameter(models["preprocessing"], "gpt_model_path") == parameter(models["tensorrt_llm"], "gpt_model_path")
    # One request limit along the generation path, so no step rejects a batch the ensemble accepted.
    llm_path = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing")
    assert {models[name].max_batch_size for name in llm_path} == {64}


def test_tensorrt_llm_serves_several_lora_adapters_per_request() -> None:
    """Multi-LoRA: the LoRA cache is configured, the ensemble and the BLS carry the adapter inputs to tensorrt_llm,
    the engine is built with the LoRA plugin up to the cache's largest rank, and the GPU cache holds a useful number
    of ragstream finetune's adapters (rank 8 on q/k/v/o) on the H100 the configs are sized for."""
    models = load_repository(PRODUCTION)
    llm = models["tensorrt_llm"]
    optimal = int(parameter(llm, "lora_cache_optimal_adapter_size") or "0")
    largest = int(parameter(llm, "lora_cache_max_adapter_size") or "0")
    fraction = float(parameter(llm, "lora_cache_gpu_memory_fraction") or "nan")
    host = int(parameter(llm, "lora_cache_host_memory_bytes") or "0")
    assert 1 <= optimal <= largest and 0.0 < fraction <= 0.2 and host >= 2**30
    assert largest == _script_value("MAX_LORA_RANK")
    script = BUILD_SCRIPT.read_text(encoding="utf-8")
    assert "--lora_plugin" in script and "--lora_target_modules attn_q attn_k attn_v attn_dense" in script
    for name in ("tensorrt_llm", "tensorrt_llm_bls", "ensemble"):  # what the client sends (TritonClient)
        assert contract_problems(models[name], TRTLLM_LORA_INPUTS, ()) == [], name
    step = next(s for s in models["ensemble"].ensemble_scheduling.step if s.model_name == "tensorrt_llm")
    assert all(step.input_map[spec.name] == spec.name for spec in TRTLLM_LORA_INPUTS)
    # What the KV cache leaves on the GPU (weights, reserve, KV at its fraction), of which the LoRA cache takes its own
    kv_fraction = float(parameter(llm, "kv_cache_free_gpu_mem_fraction") or "nan")
    sized = plan("llama-3-8b", "h100-sxm", kv_cache_free_gpu_mem_fraction=kv_fraction, max_batch_size=128)
    left = (sized.gpu.memory_bytes - sized.weight_bytes_per_gpu - sized.reserve_bytes_per_gpu) * (1 - kv_fraction)
    adapters = left * fraction / lora_adapter_bytes(get_model("llama-3-8b"), rank=optimal)
    assert adapters >= 32, adapters


def _script_value(name: str) -> int:
    match = re.search(rf"^readonly {name}=(\d+)", BUILD_SCRIPT.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{name} not found in {BUILD_SCRIPT.name}"
    return int(match.group(1))


def test_engine_shape_is_backed_by_the_kv_cache() -> None:
    """The engine built by build_engines.sh, the Triton config and the capacity plan must agree: Triton never
    hands the engine more than it holds, and under guaranteed_no_evict every engine slot needs a full-length
    RAG request's KV blocks (3k prompt + 512 answer, the shape the README sizes for)."""
    config = load_config(PRODUCTION / "tensorrt_llm" / "config.pbtxt")
    engine_batch = _script_value("MAX_BATCH_SIZE")
    assert engine_batch >= config.max_batch_size
    assert _script_value("MAX_INPUT_LEN") < _script_value("MAX_SEQ_LEN")
    fraction = float(parameter(config, "kv_cache_free_gpu_mem_fraction") or "nan")
    sizing = plan(
        "llama-3-8b",
        "h100-sxm",
        input_tokens=3072,
        output_tokens=512,
        kv_dtype="fp8",
        weight_dtype="fp8",
        kv_cache_free_gpu_mem_fraction=fraction,
        max_batch_size=engine_batch,
        max_num_tokens=_script_value("MAX_NUM_TOKENS"),
    )
    assert sizing.max_concurrent_sequences >= engine_batch


# ---------------------------------------------------------------------------------------------------------
# The checks themselves can fail
# ---------------------------------------------------------------------------------------------------------

ENSEMBLE_TEXT = (PRODUCTION / "ensemble" / "config.pbtxt").read_text(encoding="utf-8")


def _broken_ensemble(old: str, new: str) -> Any:
    assert old in ENSEMBLE_TEXT, f"fixture text {old!r} no longer in the ensemble config"
    return parse_config(ENSEMBLE_TEXT.replace(old, new, 1))


def test_unparseable_config_is_rejected() -> None:
    with pytest.raises(text_format.ParseError):
        parse_config('name: "x"\nbackend: "python"\ninput [ { name: "a" data_type: TYPE_STRNG dims: [ 1 ] } ]')
    with pytest.raises(text_format.ParseError):
        parse_config('name: "x"\nmax_batch_sizes: 8')


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # The pre-rename upstream spelling would silently drop every seed the client sends.
        ('{ name: "seed" data_type', '{ name: "random_seed" data_type', "missing input 'seed'"),
        ('{ name: "seed" data_type: TYPE_UINT64', '{ name: "seed" data_type: TYPE_INT64', "is TYPE_INT64"),
        (
            '{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }',
            '{ name: "max_tokens" data_type: TYPE_INT32 dims: [ -1 ] }',
            "dims [-1]",
        ),
        (
            '{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }',
            '{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] }',
            "optional=False",
        ),
        (
            '{ name: "text_output" data_type: TYPE_STRING',
            '{ name: "text" data_type: TYPE_STRING',
            "missing output 'text_output'",
        ),
    ],
    ids=["random_seed", "seed-int64", "max_tokens-dims", "stream-required", "text_output-renamed"],
)
def test_contract_drift_is_reported(old: str, new: str, expected: str) -> None:
    problems = contract_problems(_broken_ensemble(old, new), GENERATION_INPUTS, GENERATION_OUTPUTS)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('model_name: "postprocessing"', 'model_name: "detokenizer"', "not in the repository"),
        ('key: "QUERY" value: "text_input"', 'key: "PROMPT" value: "text_input"', "no input 'PROMPT'"),
        ('key: "seed" value: "seed"', 'key: "seed" value: "temperature"', "TYPE_FP32 but tensorrt_llm.seed"),
        ('key: "OUTPUT" value: "text_output"', 'key: "OUTPUT" value: "_text"', "'text_output' is not produced"),
        ('key: "input_ids" value: "_input_ids"', 'key: "input_ids" value: "_ids"', "nothing produces"),
        ("max_batch_size: 64", "max_batch_size: 128", "exceeds"),
    ],
    ids=["unknown-model", "unknown-input", "type-mismatch", "output-not-produced", "dangling-tensor", "batch-too-big"],
)
def test_ensemble_miswiring_is_reported(old: str, new: str, expected: str) -> None:
    models = load_repository(PRODUCTION)
    problems = ensemble_problems(_broken_ensemble(old, new), models)
    assert any(expected in problem for problem in problems), problems


def test_folder_name_mismatch_and_placeholders_are_reported(tmp_path: Path) -> None:
    model = tmp_path / "reranker"
    model.mkdir()
    (model / "config.pbtxt").write_text(
        'name: "ranker"\nbackend: "python"\n'
        'parameters { key: "tokenizer_dir" value: { string_value: "${tokenizer_dir}" } }\n',
        encoding="utf-8",
    )
    problems = file_problems(model / "config.pbtxt")
    assert any("does not match its folder" in problem for problem in problems)
    assert any("placeholder" in problem for problem in problems)
