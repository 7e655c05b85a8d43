"""The fine-tune report: data sizes, config, loss curve and time per step, base vs adapter metrics, the decision.

Pure: a :class:`FinetuneSummary` in, Markdown out (the JSON form is the summary itself).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import msgspec

from schemas.events import AdapterRef
from schemas.finetune import AdapterEvalReport, FinetuneConfig

_BARS = "▁▂▃▄▅▆▇█"


class TrainingStats(msgspec.Struct, frozen=True, kw_only=True):
    steps: int
    loss_curve: list[float]
    step_ms: list[float]
    train_s: float
    trainable_params: int = 0
    threads: int = 0


class FinetuneSummary(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    tenant: str
    created_at: float
    config: FinetuneConfig
    data_hash: str
    sizes: dict[str, int]
    eval_cases: int
    training: TrainingStats
    eval_s: float
    report: AdapterEvalReport
    adapter: AdapterRef | None
    decision: str  # promoted | rejected
    active_after: str  # the tenant's active adapter version after the run ("" = base model)
    machine: str = ""


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """The values as block characters, averaged into at most ``width`` buckets."""
    if not values:
        return ""
    size = max(1, -(-len(values) // width))
    buckets = [statistics.fmean(values[i : i + size]) for i in range(0, len(values), size)]
    low, high = min(buckets), max(buckets)
    span = (high - low) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((v - low) / span * len(_BARS)))] for v in buckets)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_markdown(summary: FinetuneSummary) -> str:
    t = summary.training
    r = summary.report
    lines = [
        f"# Fine-tune report: tenant `{summary.tenant}`, run `{summary.run_id}`",
        "",
        f"**Decision: {summary.decision}**"
        + (f" (adapter {summary.adapter.name}@{summary.adapter.version})" if summary.adapter else ""),
        "",
    ]
    if r.reasons:
        lines += ["Why not promoted:", "", *[f"- {reason}" for reason in r.reasons], ""]
    lines += [f"Active adapter for the tenant after the run: {summary.active_after or 'base model (none)'}", ""]
    if summary.machine:
        lines += [f"Machine: {summary.machine}", ""]
    lines += ["## Data", "", "| split | examples | of which refusals |", "|---|---|---|"]
    s = summary.sizes
    lines += [
        f"| train | {s.get('train', 0)} | {s.get('train_refusals', 0)} |",
        f"| held-out | {s.get('heldout', 0)} | {s.get('heldout_refusals', 0)} |",
        "",
        f"From golden questions: {s.get('golden', 0)}; generated from chunks: {s.get('generated', 0)}. "
        f"Held-out cases answered by both models: {summary.eval_cases}. Data sha256 `{summary.data_hash[:16]}`.",
        "",
        "## Config",
        "",
        "```json",
        msgspec.json.format(msgspec.json.encode(summary.config), indent=2).decode(),
        "```",
        "",
        "## Training",
        "",
    ]
    if t.loss_curve:
        mean_ms = statistics.fmean(t.step_ms) if t.step_ms else 0.0
        p50_ms = statistics.median(t.step_ms) if t.step_ms else 0.0
        lines += [
            f"{t.steps} steps in {t.train_s:.1f} s (model load included); per step mean {mean_ms / 1000:.2f} s, "
            f"p50 {p50_ms / 1000:.2f} s; {t.trainable_params:,} trainable parameters; {t.threads} torch threads.",
            "",
            f"Loss curve (first {t.loss_curve[0]:.3f}, last {t.loss_curve[-1]:.3f}, min {min(t.loss_curve):.3f}):",
            "",
            f"    {sparkline(t.loss_curve)}",
            "",
            "| step | loss | step s |",
            "|---|---|---|",
        ]
        stride = max(1, len(t.loss_curve) // 20)
        shown = sorted({*range(0, len(t.loss_curve), stride), len(t.loss_curve) - 1})
        lines += [f"| {i + 1} | {t.loss_curve[i]:.4f} | {t.step_ms[i] / 1000:.2f} |" for i in shown]
        lines.append("")
    lines += [
        "## Held-out evaluation (base and adapter, same cases, same run)",
        "",
        f"Answered in {summary.eval_s:.1f} s. Held-out sha256 `{r.heldout_hash[:16]}`.",
        "",
        "| metric | base | adapter | change |",
        "|---|---|---|---|",
    ]
    for name in ("correctness", "citation_rate", "false_refusal_rate", "refusal_recall", "invalid_citation_rate"):
        b, a = getattr(r.base, name), getattr(r.adapter, name)
        change = "-" if a is None or b is None else f"{a - b:+.3f}"
        lines.append(f"| {name} | {_fmt(b)} | {_fmt(a)} | {change} |")
    g = r.thresholds
    lines += [
        "",
        f"Gate: correctness gain >= {g.min_correctness_gain:+.3f}, citation gain >= {g.min_citation_gain:+.3f}, "
        f"false-refusal rise <= {g.max_false_refusal_increase:+.3f}, "
        f"invalid-citation rise <= {g.max_invalid_citation_increase:+.3f}, "
        f"strict gain on one: {g.require_strict_gain}, "
        f">= {g.min_heldout_cases} answerable held-out cases ({r.adapter.answerable} here).",
        "",
    ]
    if summary.adapter is not None:
        a = summary.adapter
        lines += [
            "## Adapter",
            "",
            f"- name/version: {a.name}@{a.version}",
            f"- weights sha256: `{a.content_hash}`",
            f"- base model: {a.base_model}",
            f"- data sha256: `{a.data_hash}`",
            f"- config sha256: `{a.config_hash}`",
            "",
        ]
    return "\n".join(lines)
