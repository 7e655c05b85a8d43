"""Multi-LoRA in llm_small's engine (``triton_models/cpu/_shared/chat_engine.py``), in the model environment: two
tenants' adapters and a base-model request in one continuous batch. Each row gets its own adapter and only its own:
tenant A's answer in the mixed batch is what A's adapter gives alone, B's likewise, and the base request gives what
the base model gave before any adapter was loaded. Adapters load from a folder on first use, without restarting the
engine; an unknown or escaping adapter name fails only that request.

The adapters are random LoRA weights (PEFT's ``init_lora_weights=False``), not trained: what matters here is that
they change the output, each differently.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from infra.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "triton_models" / "cpu" / "_shared"

SCRIPT = r"""
import json, sys, threading, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
import peft
from model_files import load_causal_lm, source
from chat_engine import ChatEngine, GenRequest

root = sys.argv[2]
model, tok = load_causal_lm(source("smollm2"), verify=False)
for i, tenant in enumerate(("tenant-a", "tenant-b")):
    torch.manual_seed(100 + i)
    base, _ = load_causal_lm(source("smollm2"), verify=False)
    lora = peft.LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, lora).save_pretrained(f"{root}/{tenant}/0123456789abcdef")

engine = ChatEngine(model, tok, name="llm_small", max_active=8, lora_dir=root, log=lambda m: None)
PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"

def ask(*loras):
    results, done = {}, []
    lock = threading.Lock()
    all_done = threading.Event()
    def one(key, lora):
        text = []
        def emit(piece, final):
            text.append(piece)
            if final:
                with lock:
                    results[key] = "".join(text)
                    if len(results) == len(loras):
                        all_done.set()
        def fail(message):
            with lock:
                results[key] = "ERROR " + message
                if len(results) == len(loras):
                    all_done.set()
        return GenRequest(prompt=PROMPT, max_tokens=12, lora_name=lora, emit=emit, fail=fail, request_id=key)
    requests = [one(f"{i}:{lora}", lora) for i, lora in enumerate(loras)]
    for request in requests:  # queued together: admitted in one step, one mixed batch
        engine._queue.put(request)
    assert all_done.wait(120)
    return [results[f"{i}:{lora}"] for i, lora in enumerate(loras)]

A, B = "tenant-a/0123456789abcdef", "tenant-b/0123456789abcdef"
out = {}
out["base_before"] = ask("")[0]
out["a_alone"] = ask(A)[0]
out["b_alone"] = ask(B)[0]
out["mixed"] = ask(A, "", B, A)
out["max_batch"] = engine.max_batch_seen
out["unknown"] = ask("tenant-c/0123456789abcdef", "../tenant-a/0123456789abcdef", A)
out["loaded"] = sorted(engine.loras)
engine.close()

# Room for one adapter: B replaces A (least recently used), A comes back, and a batch that needs both at once
# serves the first and refuses the second (its adapter cannot evict one a running row uses).
engine = ChatEngine(model, tok, name="llm_small", max_active=8, lora_dir=root, max_loras=1, log=lambda m: None)
out["one_slot"] = [ask(A)[0], ask(B)[0], ask(A)[0]]
out["one_slot_loaded"] = list(engine.loras)
out["one_slot_both"] = ask(A, B)
engine.close()
print(json.dumps(out))
"""


def test_each_tenants_request_uses_its_own_adapter_in_one_mixed_batch(tmp_path: Path) -> None:
    settings = Settings()
    result = subprocess.run(
        ["nice", "-n", "10", str(settings.triton_python), "-c", SCRIPT, str(SHARED), str(tmp_path / "adapters")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    base, a, b = out["base_before"], out["a_alone"], out["b_alone"]
    assert len({base, a, b}) == 3, out  # the adapters change the answer, each differently
    assert out["mixed"] == [a, base, b, a], out  # A never gets B's adapter, the base row gets none
    assert out["max_batch"] >= 4
    unknown, escaping, still_a = out["unknown"]
    assert unknown.startswith("ERROR") and "no adapter 'tenant-c/0123456789abcdef'" in unknown
    assert escaping.startswith("ERROR") and "invalid adapter name" in escaping
    assert still_a == a
    assert out["loaded"] == ["tenant-a/0123456789abcdef", "tenant-b/0123456789abcdef"]
    assert out["one_slot"] == [a, b, a], out  # evicted and reloaded adapters answer as before
    assert out["one_slot_loaded"] == ["tenant-a/0123456789abcdef"]
    first, refused = out["one_slot_both"]
    assert first == a and refused.startswith("ERROR") and "in use by running requests" in refused, out
