"""A tiny LoRA run on llm_small's weights (SmolLM2-135M-Instruct) in the model environment: the adapter is saved in
PEFT's format with its manifest, loads onto the base model, and changes its output logits; disabled, it gives the
base model's logits back exactly. Then the held-out answering mode writes a base and an adapter answer per case.

Runs the real training script (``triton_models/cpu/_shared/lora_train.py``) with one thread, a few steps.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import msgspec

from infra.settings import Settings
from processors.evaluation.golden import load_golden
from processors.finetune.dataset import build_training_set, to_jsonl
from schemas.finetune import FinetuneConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "triton_models" / "cpu" / "_shared" / "lora_train.py"
GOLDEN = REPO / "benchmarks" / "eval" / "golden" / "python_docs.jsonl"

LOGITS = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
import lora_train
base, tok, _ = lora_train.load_base("llm_small")
ids = tok(sys.argv[3], add_special_tokens=False, return_tensors="pt")
with torch.inference_mode():
    before = base(**ids).logits
    model = lora_train.load_adapter(base, sys.argv[2]).eval()
    after = model(**ids).logits
    with model.disable_adapter():
        disabled = model(**ids).logits
print(json.dumps({"changed": float((after - before).abs().max()), "disabled": float((disabled - before).abs().max()),
                  "adapters": list(model.peft_config)}))
"""


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["nice", "-n", "10", str(settings.triton_python), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": "/usr/bin:/bin", "NO_PROGRESS": "1", "HOME": str(Path.home())},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_few_steps_make_an_adapter_that_loads_and_changes_the_logits(tmp_path: Path) -> None:
    settings = Settings()
    config = FinetuneConfig(max_steps=2, batch_size=1, max_seq_len=160, learning_rate=5e-3, rank=4, alpha=8,
                            eval_max_new_tokens=6)  # fmt: skip
    data = build_training_set("acme", load_golden(GOLDEN), [], config)
    (tmp_path / "data.jsonl").write_bytes(to_jsonl(data.examples))
    (tmp_path / "config.json").write_bytes(msgspec.json.encode(config))
    adapter = tmp_path / "adapter"
    result = _run(settings, str(SCRIPT), "train", "--data", str(tmp_path / "data.jsonl"), "--config",
                  str(tmp_path / "config.json"), "--out", str(adapter), "--threads", "1",
                  "--data-hash", data.data_hash, "--config-hash", config.digest())  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert [s["step"] for s in steps] == [1, 2] and all(s["total"] == 2 for s in steps)
    assert all(s["loss"] > 0 and s["step_ms"] > 0 for s in steps)
    # PEFT's format, and a manifest that identifies the adapter
    assert (adapter / "adapter_config.json").is_file()
    weights = adapter / "adapter_model.safetensors"
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["content_hash"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["data_hash"] == data.data_hash and manifest["config_hash"] == config.digest()
    assert manifest["base_model"] == "llm_small" and manifest["base_weights"].startswith("smollm2-135m-instruct@")
    assert manifest["loss_curve"] == [s["loss"] for s in steps] and len(manifest["step_ms"]) == 2
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4

    probe = data.split("heldout")[0].text
    out = json.loads(_run(settings, "-c", LOGITS, str(SCRIPT.parent), str(adapter), probe).stdout.splitlines()[-1])
    assert out["changed"] > 1e-3, out
    assert out["disabled"] == 0.0, out

    held = tmp_path / "held.jsonl"
    held.write_bytes(to_jsonl(data.split("heldout")[:1]))
    answers = tmp_path / "answers.jsonl"
    _run(settings, str(SCRIPT), "answer", "--data", str(held), "--config", str(tmp_path / "config.json"),
         "--adapter", str(adapter), "--out", str(answers), "--threads", "1")  # fmt: skip
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [(r["id"], r["variant"]) for r in rows] == [(data.split("heldout")[0].id, v) for v in ("base", "adapter")]
    assert all(isinstance(r["text"], str) and r["ms"] > 0 for r in rows)
