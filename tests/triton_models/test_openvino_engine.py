"""The OpenVINO chat engine (``triton_models/cpu/_shared/openvino_engine.py``) in the model environment, beside the
torch engine it replaced as the served default: the same greedy answer in the same precision, stop words, the
non-streaming form, cancellation that frees the sequence, the context limit, and concurrent streams batched.

It runs on the OpenVINO IR that set-up exports (``openvino_export.py``); a missing IR fails the test.
"""

from __future__ import annotations

from tests.triton_models.model_env import run_in_model_env

SCRIPT = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(2)
from model_files import load_causal_lm, load_tokenizer, openvino_folder, source
from chat_engine import ChatEngine, GenRequest
from openvino_engine import OpenVINOChatEngine

src = source("smollm2")
folder = openvino_folder(src)
assert (folder / ".complete").exists(), f"no OpenVINO IR in {folder}: run infra/scripts/setup.sh"
logs = []
ov = OpenVINOChatEngine(folder, load_tokenizer(src), name="llm_small", precision="fp32", threads=2, max_active=8,
                        max_context=512, log=logs.append)
model, tok = load_causal_lm(src, verify=False)
pt = ChatEngine(model, tok, name="llm_small", max_active=8, log=lambda m: None)

def chat(text):
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"

def run(engine, prompts, *, stop_words=(), stream=True, cancel_after=None, max_tokens=24):
    results, pieces, errors = {}, {}, {}
    done = threading.Event()
    lock = threading.Lock()
    requests = []
    for i, prompt in enumerate(prompts):
        pieces[i] = []
        def emit(piece, final, i=i):
            with lock:
                if piece:
                    pieces[i].append(piece)
                if final:
                    results[i] = "".join(pieces[i])
                    if len(results) + len(errors) == len(prompts):
                        done.set()
        def fail(message, i=i):
            with lock:
                errors[i] = message
                if len(results) + len(errors) == len(prompts):
                    done.set()
        cancelled = (lambda i=i: len(pieces[i]) >= cancel_after) if cancel_after else None
        requests.append(GenRequest(prompt=prompt, max_tokens=max_tokens, stop_words=stop_words, stream=stream,
                                   emit=emit, fail=fail, is_cancelled=cancelled, request_id=f"r{i}"))
    started = time.monotonic()
    for request in requests:
        engine.submit(request)
    assert done.wait(300)
    n = range(len(prompts))
    return {"texts": [results.get(i) for i in n], "errors": [errors.get(i) for i in n],
            "pieces": [len(pieces[i]) for i in n], "prompt_tokens": requests[0].prompt_tokens,
            "wall": time.monotonic() - started}

out = {}
kafka = chat("What is Apache Kafka?")
out["ov"] = run(ov, [kafka])
out["pt"] = run(pt, [kafka])
count = chat("Count from 1 to 10, separated by commas.")
out["count"] = run(ov, [count], max_tokens=40)["texts"][0]
out["stopped"] = run(ov, [count], stop_words=("4",), max_tokens=40)["texts"][0]
out["whole"] = run(ov, [kafka], stream=False)
out["cancel"] = run(ov, [chat("Write a long story about a lighthouse keeper.")], cancel_after=3, max_tokens=400)
out["cancel_log"] = [line for line in logs if "cancelled after" in line]
out["after_cancel"] = run(ov, [kafka])["texts"][0]
out["too_long"] = run(ov, [chat("word " * 600)])["errors"][0]
questions = [chat(f"Name {n} animals that live in the sea.") for n in range(2, 10)]
sequential = sum(run(ov, [q])["wall"] for q in questions)
together = run(ov, questions)
out["batched"] = {"sequential": sequential, "together": together["wall"], "max_batch": ov.max_batch_seen,
                  "all_answered": all(together["texts"])}
ov.close()
pt.close()
print(json.dumps(out))
"""


def test_openvino_engine_serves_what_the_torch_engine_did_and_streams_stops_cancels_and_batches() -> None:
    out = run_in_model_env(SCRIPT, timeout=600)
    ov, pt = out["ov"], out["pt"]
    # Same weights, same fp32 arithmetic, greedy: the same answer (its first words at least), the same prompt count.
    assert ov["texts"][0].split()[:8] == pt["texts"][0].split()[:8], (ov["texts"], pt["texts"])
    assert ov["prompt_tokens"] == pt["prompt_tokens"] > 5
    assert ov["pieces"][0] >= 5, ov  # streamed, not one response
    assert "kafka" in ov["texts"][0].lower() and "<|im_" not in ov["texts"][0]
    assert "4" in out["count"] and "4" not in out["stopped"] and out["count"].startswith(out["stopped"]), out
    assert out["whole"]["pieces"] == [1] and out["whole"]["texts"] == ov["texts"], out["whole"]
    cancel_line = out["cancel_log"][-1]
    assert 3 <= int(cancel_line.rsplit("after ", 1)[1].split()[0]) < 50, cancel_line
    assert out["after_cancel"] == ov["texts"][0]  # the engine keeps serving, unchanged
    assert "the context is 512" in out["too_long"], out["too_long"]
    batched = out["batched"]
    assert batched["all_answered"] and batched["max_batch"] >= 4, batched
    # One step serves every running stream, so 8 together take far less than 8 one after another.
    assert batched["together"] < 0.6 * batched["sequential"], batched
