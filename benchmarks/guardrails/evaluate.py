"""Guardrails evaluation: quality on labelled data and latency, written to benchmarks/results/guardrails/.

    python benchmarks/guardrails/evaluate.py [--pii-samples 3000] [--latency-queries 400] [--quick]

Sections: PII recall/precision per type (batch and streamed with random splits, plus Presidio's default pipeline
on the same text), injection cross-dataset (both directions), toxicity on our own small labelled sample,
false-block rate on Python FAQ headings, groundedness on FAQ sections, latency vs Presidio's default pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import html
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_data import TYPES, PiiGenerator, Sample  # noqa: E402

from processors.guardrails import injection_train as it  # noqa: E402
from processors.guardrails.injection import InjectionDetector, rule_hits  # noqa: E402
from processors.guardrails.input_guard import InputGuard  # noqa: E402
from processors.guardrails.pii import (  # noqa: E402
    PiiEntity,
    build_default_presidio,
    find_pattern_entities,
    get_pii_analyzer,
)
from processors.guardrails.policy import GuardPolicy  # noqa: E402
from processors.guardrails.stream_guard import PiiStreamMasker, check_groundedness, split_sentences  # noqa: E402
from processors.guardrails.toxicity import TOXIC_RULES, ToxicityScorer  # noqa: E402
from processors.reporting.machine import describe_machine, machine_info  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "results" / "guardrails"
FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")
TOX_SAMPLE = Path(__file__).with_name("toxicity_sample.jsonl")


# --- PII -------------------------------------------------------------------------------------------------------


def _score_pii(samples: Sequence[Sample], predict: Callable[[Sample], list[PiiEntity]]) -> dict[str, Any]:
    """TP: a prediction of the same type covering the whole gold span. Also 'masked': covered by any type."""
    tp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    masked = 0
    total = 0
    for s in samples:
        pred = predict(s)
        used: set[int] = set()
        for g in s.gold:
            total += 1
            hit = [
                i
                for i, p in enumerate(pred)
                if p.entity_type == g.entity_type and p.start <= g.start and p.end >= g.end
            ]
            if any(p.start <= g.start and p.end >= g.end for p in pred):
                masked += 1
            if hit:
                tp[g.entity_type] += 1
                used.update(hit)
            else:
                fn[g.entity_type] += 1
        for i, p in enumerate(pred):
            if i not in used and p.entity_type in TYPES:
                fp[p.entity_type] += 1
    per_type = {}
    for t in TYPES:
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else float("nan")
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else float("nan")
        per_type[t] = {"recall": round(r, 4), "precision": round(p, 4), "tp": tp[t], "fn": fn[t], "fp": fp[t]}
    all_tp, all_fn, all_fp = sum(tp.values()), sum(fn.values()), sum(fp.values())
    return {
        "per_type": per_type,
        "micro": {
            "recall": round(all_tp / max(1, all_tp + all_fn), 4),
            "precision": round(all_tp / max(1, all_tp + all_fp), 4),
        },
        "masked_any_type": round(masked / max(1, total), 4),
        "entities": total,
    }


def eval_pii(n: int, seed: int) -> dict[str, Any]:
    gen = PiiGenerator(seed)
    samples = gen.samples(n)
    batch = _score_pii(samples, lambda s: find_pattern_entities(s.text))

    analyzer = get_pii_analyzer()
    via_presidio = _score_pii(samples, lambda s: analyzer.analyze(s.text, TYPES))

    leaks = 0
    mismatch = 0
    held: list[int] = []

    def streamed(s: Sample) -> list[PiiEntity]:
        nonlocal leaks, mismatch
        m = PiiStreamMasker(TYPES)
        out = [m.push(p) for p in gen.random_pieces(s.text)]
        out.append(m.finish())
        text = "".join(out)
        held.append(m.max_held)
        for g in s.gold:
            raw = s.text[g.start : g.end]
            digits = re.sub(r"\D", "", raw)
            if (
                raw in text
                or (g.entity_type != "EMAIL_ADDRESS" and raw[:4] in text)  # 4-char prefix of a number
                or (len(digits) >= 8 and digits in re.sub(r"\D", "", text))
            ):
                leaks += 1
        masked_batch = find_pattern_entities(s.text)
        if [(e.entity_type, e.start, e.end) for e in masked_batch] != [
            (e.entity_type, e.start, e.end) for e in m.entities
        ]:
            mismatch += 1
        return m.entities

    stream = _score_pii(samples, streamed)
    stream["leaked_entities"] = leaks
    stream["differs_from_batch"] = mismatch
    stream["max_held_chars"] = max(held)
    stream["p50_held_chars"] = statistics.median(held)

    presidio = build_default_presidio()
    presidio.analyze("warm up john@example.com", language="en")
    default = _score_pii(
        samples,
        lambda s: [
            PiiEntity(r.entity_type, r.start, r.end, r.score)
            for r in presidio.analyze(s.text, language="en", entities=TYPES, score_threshold=0.5)
        ],
    )
    return {
        "samples": n,
        "seed": seed,
        "ours_batch": batch,
        "ours_via_presidio_engine": via_presidio,
        "ours_streamed_random_splits": stream,
        "presidio_default_threshold_0.5": default,
    }


# --- injection -------------------------------------------------------------------------------------------------


def eval_injection() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for train_on, test_on in (("slabs", "neuralchemy"), ("neuralchemy", "slabs")):
        model = it.train(train_on)  # type: ignore[arg-type]
        det = InjectionDetector(model)
        for split_name, ds in ((f"{test_on}/test", test_on), (f"{train_on}/test (in-domain)", train_on)):
            data = it.load(ds, "test")  # type: ignore[arg-type]
            model_pred = [int(model.calibrated(t) >= 0.5) for t in data.texts]
            rules_pred = [int(bool(rule_hits(t))) for t in data.texts]
            comb_pred = [int(det.check(t).score >= 0.5) for t in data.texts]
            out[f"train {train_on}/train -> {split_name}"] = {
                "model": it.score(model_pred, data.labels).as_dict(),
                "rules_only": it.score(rules_pred, data.labels).as_dict(),
                "model+rules": it.score(comb_pred, data.labels).as_dict(),
                "threshold_from": f"{train_on}/validation ({model.threshold:.2f})",
            }
    return out


# --- toxicity --------------------------------------------------------------------------------------------------


def eval_toxicity() -> dict[str, Any]:
    rows = [json.loads(line) for line in TOX_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [str(r["text"]) for r in rows]
    gold = [int(r["label"]) for r in rows]
    scorer = ToxicityScorer()
    results = [scorer.check(t) for t in texts]
    model = [int(r.model_score >= 0.5) for r in results]
    rules = [int(any(p.search(t) for _, p, _ in TOXIC_RULES)) for t in texts]
    comb = [int(r.score >= 0.5) for r in results]
    by_cat: dict[str, dict[str, int]] = {}
    for r, c in zip(rows, comb, strict=True):
        cat = str(r.get("category", "?"))
        d = by_cat.setdefault(cat, {"n": 0, "flagged": 0})
        d["n"] += 1
        d["flagged"] += c
    return {
        "sample": f"{TOX_SAMPLE.name}: {len(rows)} rows written for this project ({sum(gold)} toxic); "
        "not an independent benchmark",
        "model_only(alt-profanity-check)": it.score(model, gold).as_dict(),
        "rules_only": it.score(rules, gold).as_dict(),
        "model+rules": it.score(comb, gold).as_dict(),
        "flag_rate_by_category": by_cat,
    }


# --- Python FAQ: benign questions and groundedness ---------------------------------------------------------------


def _strip_tags(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("¶", "").strip()


def faq_headings() -> list[str]:
    """Section headings of the FAQ pages (Sphinx marks them with a headerlink; sidebar titles have none)."""
    heads: list[str] = []
    for f in sorted(FAQ_DIR.glob("*.html")):
        for m in re.finditer(r"<h[1-4]>(.*?)</h[1-4]>", f.read_text(encoding="utf-8"), re.S):
            if "headerlink" not in m.group(1):
                continue
            h = " ".join(_strip_tags(m.group(1)).split())
            if h and h not in heads:
                heads.append(h)
    return heads


def faq_sections() -> list[str]:
    sections: list[str] = []
    for f in sorted(FAQ_DIR.glob("*.html")):
        body = f.read_text(encoding="utf-8")
        for sec in re.split(r"<h[2-4][^>]*>", body)[1:]:
            paras = [" ".join(_strip_tags(p).split()) for p in re.findall(r"<p>(.*?)</p>", sec, re.S)]
            text = " ".join(p for p in paras if p)
            if len(split_sentences(text)) >= 3:
                sections.append(text)
    return sections


def eval_benign(guard: InputGuard) -> dict[str, Any]:
    if not FAQ_DIR.exists():
        return {"skipped": f"{FAQ_DIR} not found (apt-get install python3.11-doc)"}
    heads = faq_headings()
    policy = GuardPolicy()

    async def run() -> list[Any]:
        return [await guard.check(h, policy) for h in heads]

    results = asyncio.run(run())
    blocked = [(h, r.verdict.reasons) for h, r in zip(heads, results, strict=True) if r.blocked]
    modified = [(h, r.verdict.reasons) for h, r in zip(heads, results, strict=True) if r.verdict.action == "modify"]
    return {
        "questions": len(heads),
        "blocked": len(blocked),
        "false_block_rate": round(len(blocked) / max(1, len(heads)), 4),
        "modified": len(modified),
        "blocked_examples": blocked[:10],
        "modified_examples": modified[:5],
    }


def eval_faq_pii_false_positives() -> dict[str, Any]:
    if not FAQ_DIR.exists():
        return {"skipped": "no FAQ"}
    sections = faq_sections()
    hits: Counter[str] = Counter()
    for s in sections:
        for e in find_pattern_entities(s):
            hits[e.entity_type] += 1
    return {"sections": len(sections), "chars": sum(len(s) for s in sections), "pattern_hits": dict(hits)}


def eval_groundedness(seed: int, threshold: float) -> dict[str, Any]:
    if not FAQ_DIR.exists():
        return {"skipped": "no FAQ"}
    rnd = random.Random(seed)
    sections = faq_sections()
    tp = fp = tn = fn = 0
    for i, sec in enumerate(sections):
        others = [j for j in range(len(sections)) if j != i]
        retrieved = [sec, *(sections[j] for j in rnd.sample(others, 2))]
        rnd.shuffle(retrieved)
        pos = rnd.choice(split_sentences(sec))
        words = pos.split()
        if len(words) > 6 and rnd.random() < 0.5:  # light paraphrase: drop ~25% of the words
            pos = " ".join(w for w in words if rnd.random() > 0.25)
        neg_src = sections[rnd.choice([j for j in others if sections[j] not in retrieved])]
        neg = rnd.choice(split_sentences(neg_src))
        for sent, grounded in ((pos, True), (neg, False)):
            checks = check_groundedness(sent, retrieved, threshold, min_words=1)
            pred_ungrounded = any(not c.grounded for c in checks)
            if not grounded and pred_ungrounded:
                tp += 1
            elif not grounded:
                fn += 1
            elif pred_ungrounded:
                fp += 1
            else:
                tn += 1
    n = tp + fp + tn + fn
    prec = tp / max(1, tp + fp)
    rec = tp / max(1, tp + fn)
    return {
        "method": f"share of content words in best passage >= {threshold}",
        "pairs": n // 2,
        "accuracy": round((tp + tn) / max(1, n), 4),
        "ungrounded_precision": round(prec, 4),
        "ungrounded_recall": round(rec, 4),
        "setup": "positive: sentence (50% with 25% words dropped) from a retrieved FAQ section; negative: sentence "
        "from a non-retrieved section; 3 retrieved sections each",
    }


# --- latency ---------------------------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def eval_latency(guard: InputGuard, n: int, seed: int) -> dict[str, Any]:
    gen = PiiGenerator(seed + 1)
    queries = [s.text for s in gen.samples(n // 2)]
    if FAQ_DIR.exists():
        queries += faq_headings()[: n // 4]
    queries += it.load("slabs", "test").texts[: n - len(queries)]
    policy = GuardPolicy()
    presidio = build_default_presidio()
    for q in queries[:20]:
        presidio.analyze(q, language="en")

    async def run_guard() -> list[float]:
        await guard.warm_up()
        for q in queries[:20]:
            await guard.check(q, policy)
        times = []
        for q in queries:
            t = time.perf_counter()
            await guard.check(q, policy)
            times.append((time.perf_counter() - t) * 1e3)
        return times

    ours = asyncio.run(run_guard())
    base = []
    for q in queries:
        t = time.perf_counter()
        presidio.analyze(q, language="en")
        base.append((time.perf_counter() - t) * 1e3)
    analyzer = get_pii_analyzer()
    pii_only = []
    for q in queries:
        t = time.perf_counter()
        analyzer.analyze(q, policy.pii_entities())
        pii_only.append((time.perf_counter() - t) * 1e3)
    masker_push = []
    for q in queries[:200]:
        m = PiiStreamMasker(policy.mask_entities)
        for piece in gen.random_pieces(q, 6):
            t = time.perf_counter()
            m.push(piece)
            masker_push.append((time.perf_counter() - t) * 1e6)
    stats = {}
    for name, xs in (("input_guard_full_ms", ours), ("presidio_default_ms", base), ("our_pii_only_ms", pii_only)):
        stats[name] = {"p50": round(statistics.median(xs), 3), "p99": round(_pct(xs, 0.99), 3)}
    stats["ratio_input_guard_over_presidio"] = {
        "p50": round(stats["input_guard_full_ms"]["p50"] / stats["presidio_default_ms"]["p50"], 3),
        "p99": round(stats["input_guard_full_ms"]["p99"] / stats["presidio_default_ms"]["p99"], 3),
    }
    stats["ratio_pii_only_over_presidio"] = {
        "p50": round(stats["our_pii_only_ms"]["p50"] / stats["presidio_default_ms"]["p50"], 3),
        "p99": round(stats["our_pii_only_ms"]["p99"] / stats["presidio_default_ms"]["p99"], 3),
    }
    stats["stream_masker_push_us"] = {
        "p50": round(statistics.median(masker_push), 1),
        "p99": round(_pct(masker_push, 0.99), 1),
    }
    stats["queries"] = len(queries)
    huge = "a" * 10_000_000
    t = time.perf_counter()
    r = asyncio.run(guard.check(huge, policy))
    stats["reject_10MB_ms"] = round((time.perf_counter() - t) * 1e3, 3)
    stats["reject_10MB_reason"] = r.verdict.reasons
    return stats


# --- report ----------------------------------------------------------------------------------------------------


def _md(results: dict[str, Any]) -> str:
    lines = [
        "# Guardrails evaluation",
        "",
        f"- date: {results['date']}",
        f"- machine: {describe_machine(results['machine'])}; load average {results['machine']['load_average']}",
        "",
        "## PII (generated with Faker; recall / precision per type)",
        "",
        "| type | batch R | batch P | streamed R | streamed P | via Presidio engine R | Presidio default R"
        " | Presidio default P |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    pii = results["pii"]
    for t in TYPES:
        keys = (
            "ours_batch",
            "ours_streamed_random_splits",
            "ours_via_presidio_engine",
            "presidio_default_threshold_0.5",
        )
        b, s, v, d = (pii[k]["per_type"][t] for k in keys)
        lines.append(
            f"| {t} | {b['recall']} | {b['precision']} | {s['recall']} | {s['precision']} | {v['recall']} |"
            f" {d['recall']} | {d['precision']} |"
        )
    st = pii["ours_streamed_random_splits"]
    lines += [
        "",
        f"Streamed: {st['entities']} entities, leaked {st['leaked_entities']}, differs from batch in "
        f"{st['differs_from_batch']} samples, max hold-back {st['max_held_chars']} chars.",
        "",
        "## Injection (cross-dataset)",
        "",
        "| setting | model acc / F1 | rules acc / F1 | model+rules acc / F1 |",
        "| --- | --- | --- | --- |",
    ]
    for k, v in results["injection"].items():
        cells = [f"{v[c]['accuracy']:.3f} / {v[c]['f1']:.3f}" for c in ("model", "rules_only", "model+rules")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    tox = results["toxicity"]
    lines += ["", "## Toxicity", "", tox["sample"], ""]
    for k in ("model_only(alt-profanity-check)", "rules_only", "model+rules"):
        v = tox[k]
        lines.append(f"- {k}: acc {v['accuracy']:.3f}, P {v['precision']:.3f}, R {v['recall']:.3f}, F1 {v['f1']:.3f}")
    lines += [
        "",
        "## Benign questions (Python FAQ headings)",
        "",
        f"```\n{json.dumps(results['benign'], indent=1)[:1500]}\n```",
    ]
    lines += ["", "## Groundedness", "", f"```\n{json.dumps(results['groundedness'], indent=1)}\n```"]
    lines += ["", "## Latency", "", f"```\n{json.dumps(results['latency'], indent=1)}\n```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pii-samples", type=int, default=3000)
    ap.add_argument("--latency-queries", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.pii_samples, args.latency_queries = 200, 80
    guard = InputGuard()
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": machine_info(),
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pii", lambda: eval_pii(args.pii_samples, args.seed)),
        ("injection", eval_injection),
        ("toxicity", eval_toxicity),
        ("benign", lambda: eval_benign(guard)),
        ("faq_pii_false_positives", eval_faq_pii_false_positives),
        ("groundedness", lambda: eval_groundedness(args.seed, GuardPolicy().groundedness_threshold)),
        ("latency", lambda: eval_latency(guard, args.latency_queries, args.seed)),
    ]
    for name, fn in steps:
        t = time.perf_counter()
        results[name] = fn()
        print(f"{name}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
        print(json.dumps({name: results[name]}, indent=1, default=str))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    (OUT_DIR / "summary.md").write_text(_md(results), encoding="utf-8")
    print(f"wrote {OUT_DIR}/results.json and summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
