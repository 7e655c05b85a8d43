"""The fine-tune report renders every section from a summary: data, config, loss curve, metrics, decision."""

from __future__ import annotations

from processors.finetune.report import FinetuneSummary, TrainingStats, render_markdown, sparkline
from schemas.events import AdapterRef
from schemas.finetune import AdapterEvalReport, AdapterMetrics, FinetuneConfig, GateThresholds


def _metrics(correctness: float, citation: float) -> AdapterMetrics:
    return AdapterMetrics(cases=24, answerable=20, correctness=correctness, citation_rate=citation,
                          false_refusal_rate=0.05, refusal_recall=None)  # fmt: skip


def test_sparkline_spans_low_to_high_and_buckets_long_curves() -> None:
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert len(sparkline([float(i % 7) for i in range(500)], width=50)) == 50
    assert sparkline([]) == ""


def test_the_report_has_data_config_curve_metrics_and_the_reasons_of_a_refusal() -> None:
    report = AdapterEvalReport(base=_metrics(0.4, 0.0), adapter=_metrics(0.35, 0.6), promote=False,
                               reasons=["correctness 0.350 vs base 0.400: gain -0.050 < +0.000"],
                               thresholds=GateThresholds())  # fmt: skip
    summary = FinetuneSummary(
        run_id="r1", tenant="acme", created_at=0.0, config=FinetuneConfig(rank=16), data_hash="d" * 64,
        sizes={"train": 100, "heldout": 25, "train_refusals": 20, "heldout_refusals": 5, "golden": 90,
               "generated": 35},
        eval_cases=24, training=TrainingStats(steps=3, loss_curve=[2.5, 2.0, 1.5], step_ms=[900.0, 1000.0, 1100.0],
                                              train_s=5.0, trainable_params=921600, threads=2),
        eval_s=12.5, report=report,
        adapter=AdapterRef(name="acme", version="2", content_hash="c" * 64, base_model="llm_small"),
        decision="rejected", active_after="1",
    )  # fmt: skip
    text = render_markdown(summary)
    assert "**Decision: rejected** (adapter acme@2)" in text
    assert "- correctness 0.350 vs base 0.400: gain -0.050 < +0.000" in text
    assert "Active adapter for the tenant after the run: 1" in text
    assert "| train | 100 | 20 |" in text and "| held-out | 25 | 5 |" in text
    assert '"rank": 16' in text
    assert "3 steps in 5.0 s" in text and "per step mean 1.00 s, p50 1.00 s" in text and "921,600" in text
    assert "Loss curve (first 2.500, last 1.500, min 1.500)" in text and "█▅▁" in text
    assert "| citation_rate | 0.000 | 0.600 | +0.600 |" in text
    assert "| refusal_recall | - | - | - |" in text
