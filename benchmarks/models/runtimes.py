"""CPU generation runtimes side by side, in one run: the served torch engine against OpenVINO GenAI.

For each chat model (``llm_small`` SmolLM2-135M, ``llm_large`` Qwen2.5-0.5B) and each runtime it measures, on a
RAG prompt of the default size (the ``rag_qa`` template with five ~180-token passages of the Python FAQ, as the
query path builds it) with greedy decoding and at most ``--max-tokens`` tokens: time to first token, tokens/s per
stream and in total at 1/4/8/16 concurrent streams, load time, peak memory, and the export time of each IR (from
``--prepare``). Each runtime runs in its own process, one after the other, with the
same number of threads.

    python benchmarks/models/runtimes.py --prepare   # also the int8 IR (set-up exports fp32), timed
    python benchmarks/models/runtimes.py             # the table

Runtimes: ``torch-*`` is the engine Triton serves today (``chat_engine.py``) with its weights in fp32 or bf16
(``precision: auto`` serves bf16 on a CPU with AMX or AVX512-BF16, fp32 elsewhere); ``openvino-fp32`` and
``openvino-bf16`` compute in the same precision in OpenVINO (the like-for-like comparisons of the runtime alone);
``openvino-int8`` adds int8 weights (activations stay fp32), a precision difference that favours it on speed: its
answers are compared with the fp32 ones in the report. Results: printed, and JSON + Markdown under
``benchmarks/results/models/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import REPO_ROOT, Settings
from processors.adapters.chat_formats import render_chat
from processors.generation import ChatMessage
from processors.ingest.chunking import token_chunker
from processors.ingest.loaders import load
from processors.prompts.registry import builtin_templates, format_sources
from processors.reporting.machine import describe_machine, load_average, machine_info
from schemas.events import Passage

WORKER = Path(__file__).with_name("_runtime_worker.py")
RESULTS = REPO_ROOT / "benchmarks" / "results" / "models"
OPENVINO_ENV = REPO_ROOT / ".venv-openvino"
EXPORTER = REPO_ROOT / "triton_models" / "cpu" / "_shared" / "openvino_export.py"
FAQ = Path("/usr/share/doc/python3.11/html/faq/programming.html")
QUESTIONS = [
    "How do I convert a string to a number?",
    "Why are default values shared between objects?",
    "How do I share global variables across modules?",
    "What is the most efficient way to concatenate many strings together?",
]
MODELS = {"llm_small": "smollm2-135m-instruct", "llm_large": "qwen2.5-0.5b-instruct"}
KINDS = {"llm_small": "smollm2", "llm_large": "qwen2.5"}


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str  # the worker's runtime
    weights: str  # torch: the dtype the weights are kept in; OpenVINO: the exported IR's weights (fp32 | int8)
    activations: str  # OpenVINO's INFERENCE_PRECISION_HINT (torch computes in its weights' dtype)


RUNTIMES = (
    Runtime("torch-fp32", "torch", "fp32", "f32"),
    Runtime("torch-bf16", "torch", "bf16", "bf16"),
    Runtime("openvino-fp32", "openvino", "fp32", "f32"),
    Runtime("openvino-bf16", "openvino", "fp32", "bf16"),
    Runtime("openvino-int8", "openvino", "int8", "f32"),
)
# (runtime, the one it is compared with): the runtime alone at equal precision, then what a precision change adds.
PAIRS = (
    ("openvino-fp32", "torch-fp32"),
    ("openvino-bf16", "torch-bf16"),
    ("torch-bf16", "torch-fp32"),
    ("openvino-int8", "openvino-fp32"),
    ("openvino-int8", "torch-bf16"),
)
SETUP_TIMES = RESULTS / "runtimes-setup.json"  # what the last --prepare took, read by later runs


def models_dir() -> Path:
    return Settings.from_env().cache_path / "models"


def hf_folder(model: str) -> Path:
    """The dequantized fp32 copy that ``model_files.py`` wrote at set-up (the OpenVINO export reads it)."""
    found = sorted(models_dir().glob(f"{MODELS[model]}-*-hf"))
    if not found:
        raise SystemExit(f"no converted {model} under {models_dir()}: run the set-up (infra/scripts/setup.sh) first")
    return found[-1]


def ov_folder(model: str, weights: str) -> Path:
    return hf_folder(model).with_name(hf_folder(model).name.removesuffix("-hf") + f"-ov-{weights}")


def prepare() -> dict[str, float]:
    """Export both models in both weight formats with the set-up's exporter; return the seconds each took."""
    if not (OPENVINO_ENV / "bin" / "python").exists():
        raise SystemExit(f"no {OPENVINO_ENV}: run infra/scripts/setup.sh first")
    took: dict[str, float] = {}
    for model, kind in KINDS.items():
        for weights in ("fp32", "int8"):
            if (ov_folder(model, weights) / ".complete").exists():
                continue
            started = time.monotonic()
            command = [str(OPENVINO_ENV / "bin" / "python"), str(EXPORTER), "--kinds", kind, "--weights", weights]
            subprocess.run(command, check=True)
            took[f"export {model} {weights}"] = time.monotonic() - started
    return took


def faq_passages() -> list[Passage]:
    raw = FAQ.read_bytes()
    doc = load("", "text/html", raw=raw, source_uri=FAQ.as_uri())
    spans = token_chunker().split(doc)
    return [
        Passage(
            chunk_id=str(i),
            doc_id="faq/programming.html",
            text=doc.text[s.start : s.end],
            score=1.0,
            title=doc.title,
            heading_path=list(s.heading_path),
        )
        for i, s in enumerate(spans)
    ]


def rag_prompts(model: str, passages: list[Passage], rerank_k: int) -> list[str]:
    """One prompt per question: its ``rerank_k`` passages sharing the most words with it, as the query path
    renders them (the retrieval itself is not what this benchmark measures)."""
    template = builtin_templates()["rag_qa"].template
    prompts = []
    for question in QUESTIONS:
        words = set(re.findall(r"[a-z]{4,}", question.lower()))
        ranked = sorted(passages, key=lambda p: -len(words & set(re.findall(r"[a-z]{4,}", p.text.lower()))))
        text = template.replace("{{sources}}", format_sources(ranked[:rerank_k])).replace("{{question}}", question)
        prompts.append(render_chat(model, [ChatMessage("user", text)]))
    return prompts


def run_worker(runtime: Runtime, model: str, prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    spec = {"runtime": runtime.engine, "kind": KINDS[model], "prompts": prompts, "max_tokens": args.max_tokens,
            "concurrency": args.concurrency, "threads": args.threads, "activations": runtime.activations,
            "weights": runtime.weights,
            "path": str(ov_folder(model, runtime.weights)) if runtime.engine == "openvino" else ""}  # fmt: skip
    python = Settings.from_env().triton_python  # where the served engines run; .venv-openvino only exports
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(python), str(WORKER)], input=json.dumps(spec), capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{runtime.name} {model} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def same_prefix_tokens(a: str, b: str) -> int:
    """How many leading words two answers share (a rough agreement measure across tokenizations)."""
    count = 0
    for left, right in zip(a.split(), b.split(), strict=False):
        if left != right:
            break
        count += 1
    return count


def report(results: dict[str, dict[str, Any]], setup: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Generation runtimes on this machine",
        "",
        f"- date: {meta['date']}; commit `{meta['commit']}`",
        f"- machine: {meta['machine']}; load average at start {meta['load_start']}, at end {meta['load_end']}",
        f"- workload: RAG prompt (rag_qa, 5 FAQ passages), greedy, at most {meta['max_tokens']} new tokens, "
        f"{meta['threads']} threads, each runtime alone in its own process",
        "",
        "| model | runtime | prompt tokens | load s | peak RSS MiB | TTFT s (1 stream) | tokens/s (1 stream) |"
        + "".join(f" {n} streams: TTFT s / per stream / total tok/s |" for n in meta["concurrency"][1:]),
        "|---|---|---:|---:|---:|---:|---:|" + "---|" * (len(meta["concurrency"]) - 1),
    ]
    for key, r in results.items():
        model, runtime = key.split(" ", 1)
        one = r["concurrency"][str(meta["concurrency"][0])]
        row = (f"| {model} | {runtime} | {r['prompt_tokens']} | {r['load_s']:.1f} | {r['peak_rss_mib']:.0f} | "
               f"{one['ttft_s_mean']:.3f} | {one['tokens_per_s_per_stream']:.1f} |")  # fmt: skip
        for n in meta["concurrency"][1:]:
            c = r["concurrency"][str(n)]
            row += f" {c['ttft_s_mean']:.2f} / {c['tokens_per_s_per_stream']:.1f} / {c['tokens_per_s_total']:.1f} |"
        lines.append(row)
    first, last = str(meta["concurrency"][0]), str(meta["concurrency"][-1])
    lines += ["", f"Ratios in this run (same model): single-stream tokens/s, TTFT, total tokens/s at {last} streams; "
              "and how many leading words of the greedy answer to the first prompt agree.", ""]  # fmt: skip
    for model in MODELS:
        for name, base_name in PAIRS:
            base, other = results.get(f"{model} {base_name}"), results.get(f"{model} {name}")
            if base is None or other is None:
                continue
            b1, o1 = base["concurrency"][first], other["concurrency"][first]
            bn, on = base["concurrency"][last], other["concurrency"][last]
            rate = o1["tokens_per_s_per_stream"] / b1["tokens_per_s_per_stream"]
            lines.append(
                f"- {model}, {name} / {base_name}: tokens/s x{rate:.2f}, "
                f"TTFT x{o1['ttft_s_mean'] / b1['ttft_s_mean']:.2f}, total at {last} "
                f"x{on['tokens_per_s_total'] / bn['tokens_per_s_total']:.2f}; answers agree on "
                f"{same_prefix_tokens(base['answer'], other['answer'])} of {len(base['answer'].split())} words"
            )
    if setup:
        took = ", ".join(f"{k} {v:.0f} s" for k, v in setup["seconds"].items())
        lines += ["", f"OpenVINO export times (`--prepare` of {setup['date']}): {took}"]
    lines += ["", "Answers to the first prompt:", ""]
    lines += [f"- {key}: {json.dumps(r['answer'][:300])}" for key, r in results.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="create .venv-openvino and export the models first")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runtimes", nargs="+", default=[r.name for r in RUNTIMES], choices=[r.name for r in RUNTIMES])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if args.prepare:
        RESULTS.mkdir(parents=True, exist_ok=True)
        took = prepare()
        if took:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            SETUP_TIMES.write_text(json.dumps({"date": stamp, "seconds": took}))
    setup = json.loads(SETUP_TIMES.read_text()) if SETUP_TIMES.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT,
                            check=False).stdout.strip()  # fmt: skip
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": describe_machine(machine_info()),
        "load_start": load_average(),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
    }
    passages = faq_passages()
    results: dict[str, dict[str, Any]] = {}
    for model in args.models:
        prompts = rag_prompts(model, passages, Settings.from_env().rerank_k)
        for runtime in (r for r in RUNTIMES if r.name in args.runtimes):
            print(f"[runtimes] {model} {runtime.name} ...", file=sys.stderr, flush=True)
            results[f"{model} {runtime.name}"] = run_worker(runtime, model, prompts, args)
    meta["load_end"] = load_average()
    text = report(results, setup, meta)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = meta["date"].replace(":", "")
    (RESULTS / f"runtimes-{stamp}.md").write_text(text)
    (RESULTS / f"runtimes-{stamp}.json").write_text(json.dumps({"meta": meta, "setup": setup, "results": results}))


if __name__ == "__main__":
    main()
