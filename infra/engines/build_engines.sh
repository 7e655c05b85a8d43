#!/usr/bin/env bash
# Builds what triton_models/production needs but git does not hold: the FP8 Llama-3-8B-Instruct TensorRT-LLM
# engine, the tokenizers, TensorRT-LLM's own Python models (pre/postprocessing, BLS) and the ONNX embedder and
# reranker. Run it on the H100 node; outside the pinned Triton container it re-executes itself inside one.
#
#   HF_TOKEN=hf_... infra/engines/build_engines.sh            # all stages except smoke
#   infra/engines/build_engines.sh onnx verify                  # selected stages, in the order given
#   infra/engines/build_engines.sh smoke                        # start Triton once and send one request each
#
# Stages: check fetch llm upstream onnx verify smoke. See infra/engines/README.md for what each one does.

set -euo pipefail

# --- Pinned versions ---------------------------------------------------------------------------------------
# Triton 25.10 ships TensorRT-LLM 1.0.0 (Triton release compatibility matrix, trtllm-python-py3 container).
# The engine, the C++ backend that loads it and the upstream Python models must all come from that release.
readonly TRITON_IMAGE="nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"
readonly TRTLLM_VERSION="1.0.0"
readonly TRTLLM_TAG="v${TRTLLM_VERSION}"
readonly TRTLLM_REPO="https://github.com/NVIDIA/TensorRT-LLM.git"

# --- Models ------------------------------------------------------------------------------------------------
readonly HF_LLM="${HF_LLM:-meta-llama/Meta-Llama-3-8B-Instruct}"
readonly HF_EMBEDDER="${HF_EMBEDDER:-sentence-transformers/all-MiniLM-L6-v2}"
readonly HF_RERANKER="${HF_RERANKER:-BAAI/bge-reranker-base}"

# --- Engine shape (sized with: python -m infra.capacity --input-tokens 3072 --output-tokens 512 ...) ------
readonly MAX_BATCH_SIZE=128      # sequences in flight; ~269 RAG-sized sequences fit the FP8 KV cache
readonly MAX_NUM_TOKENS=8192     # tokens per engine iteration; also the chunk size of chunked prefill
readonly MAX_INPUT_LEN=7168      # prompt limit, leaving >= 1024 tokens of answer inside the context
readonly MAX_SEQ_LEN=8192        # Llama-3-8B's context window
readonly CALIB_SIZE=512          # calibration samples for the FP8 weight/activation/KV scales
readonly MAX_LORA_RANK=64        # largest LoRA adapter rank the engine serves (multi-LoRA, per request)

# --- Paths (fixed inside the container: the model configs refer to them) ----------------------------------
readonly ENGINES_ROOT=/engines
readonly MODELS_ROOT=/models
readonly ENGINE_DIR="${ENGINES_ROOT}/llama3-8b-fp8/tp1"
readonly CKPT_DIR="${ENGINES_ROOT}/llama3-8b-fp8/ckpt"
readonly TRT_CACHE_DIR="${ENGINES_ROOT}/trt-cache"
readonly HF_DIR="${MODELS_ROOT}/hf"
readonly TOKENIZER_DIR="${MODELS_ROOT}/tokenizer"
readonly WORK_DIR="${WORK_DIR:-/tmp/ragstream-engines}"
readonly TRTLLM_SRC="${WORK_DIR}/TensorRT-LLM-${TRTLLM_VERSION}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
MODEL_REPO="${MODEL_REPO:-${REPO_ROOT}/triton_models/production}"
readonly SCRIPT_DIR REPO_ROOT MODEL_REPO

log() { printf '[build_engines %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

local_name() { basename "$1" | tr '[:upper:]' '[:lower:]'; }

# Re-run inside the pinned container unless we are already in it. Host directories for the engines and the
# downloaded models are HOST_ENGINES_DIR and HOST_MODELS_DIR.
ensure_container() {
  if [[ -x /opt/tritonserver/bin/tritonserver ]]; then
    return
  fi
  command -v docker >/dev/null || die "not in ${TRITON_IMAGE} and docker is not available"
  local engines="${HOST_ENGINES_DIR:-/srv/engines}" models="${HOST_MODELS_DIR:-/srv/models}"
  mkdir -p "${engines}" "${models}"
  log "re-running inside ${TRITON_IMAGE}"
  exec docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
    -e HF_TOKEN -e HF_LLM -e HF_EMBEDDER -e HF_RERANKER \
    -v "${REPO_ROOT}:/workspace/ragstream" -v "${engines}:${ENGINES_ROOT}" -v "${models}:${MODELS_ROOT}" \
    -w /workspace/ragstream "${TRITON_IMAGE}" bash infra/engines/build_engines.sh "$@"
}

stage_check() {
  log "checking toolchain and GPU"
  local version
  # tensorrt_llm prints a banner on import; the version is the last line.
  version="$(python3 -c 'import tensorrt_llm; print(tensorrt_llm.__version__)' 2>/dev/null | tail -n 1 || true)"
  [[ "${version}" == "${TRTLLM_VERSION}" ]] \
    || die "TensorRT-LLM ${version:-missing} found, ${TRTLLM_VERSION} pinned; use ${TRITON_IMAGE}"
  command -v trtllm-build >/dev/null || die "trtllm-build not on PATH"
  local gpu cap
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0)"
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0)"
  log "GPU 0: ${gpu} (compute capability ${cap})"
  # FP8 GEMMs and FP8 context FMHA need Ada (8.9) or Hopper (9.0); the configs are sized for an H100.
  [[ "${cap}" == "9.0" || "${cap}" == "8.9" ]] || die "FP8 engines need compute capability 8.9 or 9.0"
  [[ "${gpu}" == *H100* ]] || log "warning: configs are sized for an H100 (80 GB); re-run infra/capacity.py"
}

stage_fetch() {
  log "fetching ${HF_LLM}, ${HF_EMBEDDER}, ${HF_RERANKER}"
  [[ -n "${HF_TOKEN:-}" ]] || log "warning: HF_TOKEN unset; ${HF_LLM} is gated and will fail to download"
  mkdir -p "${HF_DIR}" "${TOKENIZER_DIR}" "${WORK_DIR}"
  local repo
  for repo in "${HF_LLM}" "${HF_EMBEDDER}" "${HF_RERANKER}"; do
    # Meta's repos also carry the original consolidated checkpoint; only the safetensors are needed.
    huggingface-cli download "${repo}" --local-dir "${HF_DIR}/$(local_name "${repo}")" \
      --exclude "original/*" "*.pth" "*.bin" "*.onnx" "onnx/*" "openvino/*"
  done
  copy_tokenizer "${HF_DIR}/$(local_name "${HF_LLM}")" "${TOKENIZER_DIR}/llama3-8b-instruct"
  copy_tokenizer "${HF_DIR}/$(local_name "${HF_EMBEDDER}")" "${TOKENIZER_DIR}/all-MiniLM-L6-v2"
  copy_tokenizer "${HF_DIR}/$(local_name "${HF_RERANKER}")" "${TOKENIZER_DIR}/bge-reranker-base"

  if [[ ! -d "${TRTLLM_SRC}/.git" ]]; then
    log "checking out TensorRT-LLM ${TRTLLM_TAG} (quantization example and Triton model templates only)"
    GIT_LFS_SKIP_SMUDGE=1 git clone --depth 1 --branch "${TRTLLM_TAG}" --filter=blob:none --sparse \
      "${TRTLLM_REPO}" "${TRTLLM_SRC}"
    git -C "${TRTLLM_SRC}" sparse-checkout set examples/quantization triton_backend/all_models
  fi
  python3 -m pip install --quiet -r "${TRTLLM_SRC}/examples/quantization/requirements.txt"
}

# The tokenizer files only, so the Triton models never need the weights directory.
copy_tokenizer() {
  local src="$1" dst="$2" file
  mkdir -p "${dst}"
  shopt -s nullglob
  for file in "${src}"/tokenizer* "${src}"/special_tokens_map.json "${src}"/vocab.txt \
              "${src}"/sentencepiece.bpe.model "${src}"/config.json "${src}"/generation_config.json; do
    cp "${file}" "${dst}/"
  done
  shopt -u nullglob
  [[ -f "${dst}/tokenizer_config.json" ]] || die "no tokenizer_config.json in ${src}"
}

stage_llm() {
  local hf_model
  hf_model="${HF_DIR}/$(local_name "${HF_LLM}")"
  [[ -f "${hf_model}/config.json" ]] || die "${hf_model} missing; run the fetch stage first"

  log "quantizing ${HF_LLM} to FP8 (weights, activations and KV cache) with ModelOpt"
  rm -rf "${CKPT_DIR}"
  python3 "${TRTLLM_SRC}/examples/quantization/quantize.py" \
    --model_dir "${hf_model}" \
    --dtype bfloat16 \
    --qformat fp8 \
    --kv_cache_dtype fp8 \
    --calib_size "${CALIB_SIZE}" \
    --tp_size 1 \
    --output_dir "${CKPT_DIR}"

  log "building the engine into ${ENGINE_DIR}"
  rm -rf "${ENGINE_DIR}"
  # gemm_plugin auto: FP8 GEMMs as the checkpoint says. Paged context FMHA is what lets chunked prefill and
  # KV-cache reuse work on a paged cache; FP8 context FMHA runs prefill attention on the FP8 cache directly.
  trtllm-build \
    --checkpoint_dir "${CKPT_DIR}" \
    --output_dir "${ENGINE_DIR}" \
    --gemm_plugin auto \
    --gpt_attention_plugin auto \
    --kv_cache_type paged \
    --remove_input_padding enable \
    --use_paged_context_fmha enable \
    --use_fp8_context_fmha enable \
    --multiple_profiles enable \
    --max_batch_size "${MAX_BATCH_SIZE}" \
    --max_num_tokens "${MAX_NUM_TOKENS}" \
    --max_input_len "${MAX_INPUT_LEN}" \
    --max_seq_len "${MAX_SEQ_LEN}" \
    --max_beam_width 1 \
    --lora_plugin auto \
    --lora_target_modules attn_q attn_k attn_v attn_dense \
    --max_lora_rank "${MAX_LORA_RANK}" \
    --workers 1
}

stage_upstream() {
  local templates="${TRTLLM_SRC}/triton_backend/all_models/inflight_batcher_llm" model
  [[ -d "${templates}" ]] || die "${templates} missing; run the fetch stage first"
  for model in preprocessing postprocessing tensorrt_llm_bls; do
    log "copying upstream ${model}/1 from TensorRT-LLM ${TRTLLM_TAG}"
    find "${MODEL_REPO}/${model}/1" -mindepth 1 ! -name .gitkeep -delete
    cp -r "${templates}/${model}/1/." "${MODEL_REPO}/${model}/1/"
  done
  check_configs_against_upstream "${templates}"
}

# Our configs are hand-filled, not generated by fill_template.py, so make sure each still declares every
# tensor the pinned upstream template declares (upstream model.py looks several up by name) and that no
# template placeholder slipped through.
check_configs_against_upstream() {
  python3 - "$1" "${MODEL_REPO}" <<'PY'
import pathlib, re, sys

templates, repo = map(pathlib.Path, sys.argv[1:])
name = re.compile(r'name:\s*"([^"]+)"')
failed = False
for model in ("preprocessing", "postprocessing", "tensorrt_llm", "tensorrt_llm_bls"):
    upstream = set(name.findall((templates / model / "config.pbtxt").read_text())) - {model}
    ours = set(name.findall((repo / model / "config.pbtxt").read_text())) - {model}
    missing = sorted(upstream - ours)
    if missing:
        failed = True
        print(f"{model}: upstream declares tensors our config lacks: {', '.join(missing)}")
for config in sorted(repo.glob("*/config.pbtxt")):
    if "${" in config.read_text():
        failed = True
        print(f"{config}: template placeholder left")
sys.exit(1 if failed else 0)
PY
  log "configs declare every upstream tensor; no placeholders left"
}

stage_onnx() {
  log "exporting ${HF_EMBEDDER} and ${HF_RERANKER} to ONNX"
  mkdir -p "${TRT_CACHE_DIR}/embedder_onnx"
  python3 - "${HF_DIR}/$(local_name "${HF_EMBEDDER}")" "${HF_DIR}/$(local_name "${HF_RERANKER}")" \
    "${MODEL_REPO}" <<'PY'
import pathlib, sys

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

embedder_dir, reranker_dir, repo = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])


class MeanPooledEncoder(torch.nn.Module):
    """Encoder + the sentence-transformers head (mean over real tokens, then L2 norm) in one graph."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


class PairScorer(torch.nn.Module):
    """Cross-encoder over [batch, passages, tokens]: pairs become the model batch, scores come back shaped."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        flat_ids = input_ids.reshape(-1, input_ids.shape[-1])
        flat_mask = attention_mask.reshape(-1, attention_mask.shape[-1])
        logits = self.model(input_ids=flat_ids, attention_mask=flat_mask).logits
        return torch.sigmoid(logits.float()).reshape(input_ids.shape[0], input_ids.shape[1])


def export(module, args, names, output, axes, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module, args, str(path), input_names=names, output_names=[output], dynamic_axes=axes,
        opset_version=17, do_constant_folding=True, dynamo=False,
    )
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")


with torch.no_grad():
    tokenizer = AutoTokenizer.from_pretrained(embedder_dir)
    sample = tokenizer(["warm-up text"], padding="max_length", max_length=256, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    embedder = MeanPooledEncoder(AutoModel.from_pretrained(embedder_dir)).eval()
    export(embedder, tuple(sample[n] for n in names), names, "embedding",
           {**{n: {0: "batch", 1: "tokens"} for n in names}, "embedding": {0: "batch"}},
           repo / "embedder_onnx" / "1" / "model.onnx")

    tokenizer = AutoTokenizer.from_pretrained(reranker_dir)
    pairs = tokenizer(["query"] * 2, ["first passage", "second passage"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask"]
    # FP16 weights: half the memory and bandwidth on the H100; scores are cast back to FP32 in the graph.
    scorer = PairScorer(AutoModelForSequenceClassification.from_pretrained(reranker_dir)).half().cuda().eval()
    export(scorer, tuple(pairs[n].reshape(1, 2, -1).cuda() for n in names), names, "scores",
           {**{n: {0: "batch", 1: "passages", 2: "tokens"} for n in names},
            "scores": {0: "batch", 1: "passages"}},
           repo / "reranker_onnx" / "1" / "model.onnx")
PY
}

stage_verify() {
  log "verifying the engine against the Triton config"
  [[ -f "${ENGINE_DIR}/config.json" ]] || die "no engine in ${ENGINE_DIR}; run the llm stage first"
  python3 - "${ENGINE_DIR}/config.json" "${MODEL_REPO}/tensorrt_llm/config.pbtxt" <<'PY'
import json, re, sys

engine = json.load(open(sys.argv[1]))
triton = open(sys.argv[2]).read()
build = engine.get("build_config", {})
plugins = build.get("plugin_config", {})
quant = engine.get("pretrained_config", {}).get("quantization", {})
triton_batch = int(re.search(r"^max_batch_size:\s*(\d+)", triton, re.M).group(1))
checks = {
    "FP8 weights": quant.get("quant_algo") == "FP8",
    "FP8 KV cache": quant.get("kv_cache_quant_algo") == "FP8",
    "paged KV cache": str(build.get("kv_cache_type", "")).upper().endswith("PAGED"),
    "paged context FMHA (KV reuse, chunked prefill)": plugins.get("use_paged_context_fmha") is True,
    "FP8 context FMHA": plugins.get("use_fp8_context_fmha") is True,
    "engine batch >= Triton max_batch_size": build.get("max_batch_size", 0) >= triton_batch,
    "LoRA plugin (multi-LoRA)": bool(plugins.get("lora_plugin")),
    "engine LoRA rank >= Triton lora_cache_max_adapter_size": build.get("lora_config", {}).get("max_lora_rank", 0)
    >= int(re.search(r'"lora_cache_max_adapter_size" value: \{ string_value: "(\d+)"', triton).group(1)),
}
for what, ok in checks.items():
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
sys.exit(0 if all(checks.values()) else 1)
PY
  [[ -s "${MODEL_REPO}/embedder_onnx/1/model.onnx" ]] || die "embedder ONNX missing; run the onnx stage"
  [[ -s "${MODEL_REPO}/reranker_onnx/1/model.onnx" ]] || die "reranker ONNX missing; run the onnx stage"
  [[ -s "${MODEL_REPO}/preprocessing/1/model.py" ]] || die "upstream models missing; run the upstream stage"
}

# Starts Triton on the repository, waits for every model, sends one request to each endpoint, stops it.
stage_smoke() {
  log "starting Triton on ${MODEL_REPO}"
  tritonserver --model-repository="${MODEL_REPO}" --strict-readiness=true --exit-on-error=true \
    >"${WORK_DIR}/tritonserver.log" 2>&1 &
  local server=$!
  trap 'kill "${server}" 2>/dev/null || true' EXIT
  local attempt
  for attempt in $(seq 1 180); do
    curl -fs localhost:8000/v2/health/ready >/dev/null && break
    kill -0 "${server}" 2>/dev/null || die "Triton exited; see ${WORK_DIR}/tritonserver.log"
    [[ "${attempt}" -lt 180 ]] || die "Triton not ready after 15 minutes"
    sleep 5
  done
  local prompt='<|start_header_id|>user<|end_header_id|>\n\nSay hello.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n'
  curl -fsS -X POST localhost:8000/v2/models/ensemble/generate \
    -d "{\"text_input\": \"${prompt}\", \"max_tokens\": 16, \"temperature\": 0.0}"
  echo
  curl -fsS -X POST localhost:8000/v2/models/embedder/infer \
    -d '{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hello"]}]}' | head -c 300
  echo
  curl -fsS -X POST localhost:8000/v2/models/reranker/infer \
    -d '{"inputs": [{"name": "query", "shape": [1, 1], "datatype": "BYTES", "data": ["capital of France"]},
                    {"name": "passages", "shape": [1, 2], "datatype": "BYTES", "data": ["Paris is the capital of France.", "Bananas are yellow."]}]}'
  echo
  kill "${server}"
  wait "${server}" || true
  trap - EXIT
  log "smoke test passed"
}

main() {
  ensure_container "$@"
  local stages=("$@")
  [[ ${#stages[@]} -gt 0 ]] || stages=(check fetch llm upstream onnx verify)
  mkdir -p "${WORK_DIR}"
  local stage
  for stage in "${stages[@]}"; do
    case "${stage}" in
      check | fetch | llm | upstream | onnx | verify | smoke) "stage_${stage}" ;;
      *) die "unknown stage '${stage}' (check fetch llm upstream onnx verify smoke)" ;;
    esac
  done
  log "done: ${stages[*]}"
}

main "$@"
