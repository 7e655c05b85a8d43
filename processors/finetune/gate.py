"""The promotion gate: base and adapter answers to the same held-out cases, scored the same way, compared.

An adapter is promoted for a tenant only when, on the held-out split, it

* raises correctness by at least ``min_correctness_gain`` and the citation rate by at least ``min_citation_gain``
  (with ``require_strict_gain``, at least one of them strictly),
* does not raise the false-refusal rate by more than ``max_false_refusal_increase``, nor the share of answers
  citing a source number that does not exist by more than ``max_invalid_citation_increase``,
* and the split has at least ``min_heldout_cases`` answerable cases (fewer make every difference noise).

Every failed condition is a reason in the report, so a refused promotion says why. Scoring reuses the evaluation's
rules: refusals as :func:`processors.citations.is_refusal_text` reads them, key facts as
:func:`processors.evaluation.correctness.key_facts` matches them (token F1 with the reference where a case has
none), citations valid when every cited ``[n]`` has a source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import msgspec

from processors.citations import cited_numbers, is_refusal_text
from processors.evaluation.correctness import key_facts
from processors.evaluation.metrics import token_f1
from processors.finetune.dataset import TrainingExample
from schemas.finetune import AdapterEvalReport, AdapterMetrics, GateThresholds


class CaseScore(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    expect_refusal: bool
    refused: bool
    correctness: float | None
    cited: bool
    invalid_citation: bool


def score_answer(example: TrainingExample, answer: str) -> CaseScore:
    refused = is_refusal_text(answer)
    numbers = cited_numbers(answer)
    invalid = any(not 1 <= n <= len(example.sources) for n in numbers)
    correctness: float | None = None
    if not example.expect_refusal:
        if refused:
            correctness = 0.0
        elif example.key_facts:
            check = key_facts(answer, example.key_facts, example.key_fact_alternatives)
            correctness = len(check.found) / len(example.key_facts)
        else:
            correctness = token_f1(answer, example.reference_answer) or 0.0
    return CaseScore(
        id=example.id,
        expect_refusal=example.expect_refusal,
        refused=refused,
        correctness=correctness,
        cited=bool(numbers) and not invalid and not refused,
        invalid_citation=invalid,
    )


def _rate(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def metrics(scores: Sequence[CaseScore]) -> AdapterMetrics:
    answerable = [s for s in scores if not s.expect_refusal]
    unanswerable = [s for s in scores if s.expect_refusal]
    return AdapterMetrics(
        cases=len(scores),
        answerable=len(answerable),
        correctness=_rate([s.correctness or 0.0 for s in answerable]),
        citation_rate=_rate([float(s.cited) for s in answerable]),
        false_refusal_rate=_rate([float(s.refused) for s in answerable]),
        refusal_recall=_rate([float(s.refused) for s in unanswerable]),
        invalid_citation_rate=_rate([float(s.invalid_citation) for s in scores]),
    )


def score_answers(examples: Sequence[TrainingExample], answers: Mapping[str, str]) -> AdapterMetrics:
    """Metrics of one variant; a case without an answer counts as answered with nothing (wrong, uncited)."""
    return metrics([score_answer(e, answers.get(e.id, "")) for e in examples])


def heldout_hash(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\x1f{example.text}\x1f{example.answer}\n".encode())
    return digest.hexdigest()


def decide(base: AdapterMetrics, adapter: AdapterMetrics, thresholds: GateThresholds) -> tuple[bool, list[str]]:
    """``(promote, reasons)``: the reasons list every failed condition (empty when promoted)."""
    reasons: list[str] = []
    if adapter.answerable < thresholds.min_heldout_cases:
        reasons.append(f"only {adapter.answerable} answerable held-out cases (< {thresholds.min_heldout_cases})")
    b_correct, a_correct = base.correctness or 0.0, adapter.correctness or 0.0
    b_cite, a_cite = base.citation_rate or 0.0, adapter.citation_rate or 0.0
    b_refuse, a_refuse = base.false_refusal_rate or 0.0, adapter.false_refusal_rate or 0.0
    if a_correct - b_correct < thresholds.min_correctness_gain:
        reasons.append(
            f"correctness {a_correct:.3f} vs base {b_correct:.3f}: gain {a_correct - b_correct:+.3f} "
            f"< {thresholds.min_correctness_gain:+.3f}"
        )
    if a_cite - b_cite < thresholds.min_citation_gain:
        reasons.append(
            f"citation rate {a_cite:.3f} vs base {b_cite:.3f}: gain {a_cite - b_cite:+.3f} "
            f"< {thresholds.min_citation_gain:+.3f}"
        )
    if a_refuse - b_refuse > thresholds.max_false_refusal_increase:
        reasons.append(
            f"false refusals {a_refuse:.3f} vs base {b_refuse:.3f}: rise {a_refuse - b_refuse:+.3f} "
            f"> {thresholds.max_false_refusal_increase:+.3f}"
        )
    b_invalid, a_invalid = base.invalid_citation_rate or 0.0, adapter.invalid_citation_rate or 0.0
    if a_invalid - b_invalid > thresholds.max_invalid_citation_increase:
        reasons.append(
            f"citations of missing sources {a_invalid:.3f} vs base {b_invalid:.3f}: rise {a_invalid - b_invalid:+.3f} "
            f"> {thresholds.max_invalid_citation_increase:+.3f}"
        )
    if thresholds.require_strict_gain and not (a_correct > b_correct or a_cite > b_cite):
        reasons.append("neither correctness nor citation rate is higher than the base's")
    return not reasons, reasons


def evaluate(
    heldout: Sequence[TrainingExample],
    base_answers: Mapping[str, str],
    adapter_answers: Mapping[str, str],
    thresholds: GateThresholds,
) -> AdapterEvalReport:
    """The gate's report for one candidate: both variants scored on ``heldout``, and the decision."""
    base = score_answers(heldout, base_answers)
    adapter = score_answers(heldout, adapter_answers)
    promote, reasons = decide(base, adapter, thresholds)
    return AdapterEvalReport(
        base=base,
        adapter=adapter,
        promote=promote,
        reasons=reasons,
        thresholds=thresholds,
        heldout_hash=heldout_hash(heldout),
    )
