"""The promotion gate refuses an adapter that is not better than the base (wrong answers, more refusals, a tie,
too few cases) and promotes one that is; the registry promotes only what the gate passed, rolls back one step at a
time down to the base model, and rebuilds the same state from its records."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from processors.citations import REFUSAL, strip_citations
from processors.evaluation.golden import load_golden
from processors.finetune.dataset import TrainingExample, build_training_set
from processors.finetune.gate import decide, evaluate, score_answer
from processors.finetune.registry import BASE, AdapterError, AdapterRegistryState, record_key
from schemas.codec import any_event_decoder, encode
from schemas.events import AdapterRecord
from schemas.finetune import AdapterEvalReport, FinetuneConfig, GateThresholds

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "benchmarks" / "eval" / "golden" / "python_docs.jsonl"


@pytest.fixture(scope="module")
def heldout() -> list[TrainingExample]:
    data = build_training_set("acme", load_golden(GOLDEN), [], FinetuneConfig())
    held = data.split("heldout")
    assert sum(not e.expect_refusal for e in held) >= 20 and any(e.expect_refusal for e in held)
    return held


def _targets(examples: list[TrainingExample]) -> dict[str, str]:
    return {e.id: e.answer for e in examples}


def _uncited(examples: list[TrainingExample]) -> dict[str, str]:
    """A base model that knows the answers but never cites."""
    return {e.id: strip_citations(e.answer) for e in examples}


def test_scoring_reads_refusals_facts_and_citations(heldout: list[TrainingExample]) -> None:
    case = next(e for e in heldout if e.key_facts and not e.expect_refusal)
    good = score_answer(case, case.answer)
    assert good.correctness == 1.0 and good.cited and not good.refused
    assert score_answer(case, REFUSAL).refused and score_answer(case, REFUSAL).correctness == 0.0
    bogus = score_answer(case, case.answer + " Also this [99].")
    assert bogus.invalid_citation and not bogus.cited


def test_the_gate_promotes_an_adapter_that_cites_and_answers_better(heldout: list[TrainingExample]) -> None:
    report = evaluate(heldout, _uncited(heldout), _targets(heldout), GateThresholds())
    assert report.promote, report.reasons
    assert report.adapter.citation_rate == 1.0 and (report.base.citation_rate or 0.0) < 0.2
    assert report.adapter.refusal_recall == 1.0


def test_the_gate_refuses_an_adapter_trained_on_shuffled_answers(heldout: list[TrainingExample]) -> None:
    answers = [e.answer for e in heldout]
    shuffled = {e.id: answers[(i + 7) % len(answers)] for i, e in enumerate(heldout)}  # someone else's answer
    report = evaluate(heldout, _targets(heldout), shuffled, GateThresholds())
    assert not report.promote
    assert any(r.startswith("correctness") for r in report.reasons)
    assert (report.adapter.correctness or 0.0) < (report.base.correctness or 0.0)


def test_the_gate_refuses_more_false_refusals_even_with_better_citations(heldout: list[TrainingExample]) -> None:
    answerable = [e for e in heldout if not e.expect_refusal]
    adapter = _targets(heldout)
    for example in answerable[:3]:
        adapter[example.id] = REFUSAL
    report = evaluate(heldout, _uncited(heldout), adapter, GateThresholds())
    assert not report.promote
    assert [r for r in report.reasons if r.startswith("false refusals")], report.reasons
    # margins that allow the rise (and the correctness the refused cases lose) let it through
    margins = GateThresholds(max_false_refusal_increase=0.2, min_correctness_gain=-0.2)
    lenient = evaluate(heldout, _uncited(heldout), adapter, margins)
    assert lenient.promote, lenient.reasons


def test_the_gate_refuses_an_adapter_that_cites_sources_that_do_not_exist(heldout: list[TrainingExample]) -> None:
    adapter = _targets(heldout)
    spammy = [e for e in heldout if not e.expect_refusal][:4]
    for example in spammy:  # better answers elsewhere, but these cite [1] ... [9]
        adapter[example.id] = example.answer + " " + " ".join(f"[{n}]" for n in range(1, 10))
    report = evaluate(heldout, _uncited(heldout), adapter, GateThresholds())
    assert not report.promote
    assert [r for r in report.reasons if r.startswith("citations of missing sources")], report.reasons
    assert (report.adapter.invalid_citation_rate or 0.0) > 0.05


def test_a_tie_and_a_tiny_split_are_not_better(heldout: list[TrainingExample]) -> None:
    same = _targets(heldout)
    tie = evaluate(heldout, same, same, GateThresholds())
    assert not tie.promote and "neither correctness nor citation rate is higher than the base's" in tie.reasons
    small = evaluate(heldout[:4], _uncited(heldout), _targets(heldout), GateThresholds(min_heldout_cases=10))
    assert not small.promote and small.reasons[0].startswith("only ")
    promote, reasons = decide(tie.base, tie.adapter, GateThresholds(require_strict_gain=False))
    assert promote and not reasons


def _report(heldout: list[TrainingExample], *, better: bool) -> AdapterEvalReport:
    base, adapter = (_uncited(heldout), _targets(heldout)) if better else (_targets(heldout), _uncited(heldout))
    return evaluate(heldout, base, adapter, GateThresholds())


def test_registry_promotes_only_what_the_gate_passed_and_rolls_back_to_the_base(
    heldout: list[TrainingExample],
) -> None:
    state = AdapterRegistryState()
    records: list[AdapterRecord] = []

    def write(record: AdapterRecord | None) -> None:
        assert record is not None
        records.append(any_event_decoder.decode(encode(record)))  # type: ignore[arg-type]
        state.apply(record)

    good_record, good = state.plan_register("acme", content_hash="a" * 64, base_model="llm_small", path="/a",
                                            report=_report(heldout, better=True))  # fmt: skip
    write(good_record)
    bad_record, bad = state.plan_register("acme", content_hash="b" * 64, base_model="llm_small", path="/b",
                                          report=_report(heldout, better=False))  # fmt: skip
    write(bad_record)
    assert (good.adapter.version, bad.adapter.version) == ("1", "2")
    # the same weights again: no new version
    assert state.plan_register("acme", content_hash="a" * 64, base_model="llm_small", path="/x")[0] is None
    assert state.active_version("acme") == BASE and state.active_ref("acme") is None

    with pytest.raises(AdapterError, match=r"acme@2 does not beat the base model: .*citation rate 0.000 vs base 1.000"):
        state.plan_promote("acme", "2")
    write(state.plan_promote("acme", "1"))
    assert state.active_ref("acme") == good.adapter
    assert state.plan_promote("acme", "1") is None  # already active
    write(state.plan_promote("acme", "2", force=True))  # an operator overriding the gate, on the record
    assert state.history("acme") == ["1", "2"]

    write(state.plan_rollback("acme"))
    assert state.active_ref("acme") == good.adapter
    write(state.plan_rollback("acme"))
    assert state.active_version("acme") == BASE and state.active_ref("acme") is None
    with pytest.raises(AdapterError, match="already answers with the base model"):
        state.plan_rollback("acme")
    # another tenant is untouched; a replay of the records (what compaction keeps: last per key) is the same state
    assert state.active_version("globex") == BASE and state.versions("globex") == []
    latest: dict[str, AdapterRecord] = {}
    for record in records:
        latest[record_key(record)] = record
    replayed = AdapterRegistryState().apply_all(latest.values())
    assert [r.adapter for r in replayed.versions("acme")] == [good.adapter, bad.adapter]
    assert replayed.history("acme") == state.history("acme") == []
    assert replayed.get("acme", "2") is not None
    assert msgspec.structs.asdict(replayed.get("acme", "2")) == msgspec.structs.asdict(bad)  # type: ignore[arg-type]


def test_an_unknown_or_unreported_version_cannot_be_promoted() -> None:
    state = AdapterRegistryState()
    with pytest.raises(AdapterError, match="no adapter version '1'"):
        state.plan_promote("acme", "1")
    record, _ = state.plan_register("acme", content_hash="c" * 64, base_model="llm_small", path="/c")
    assert record is not None
    state.apply(record)
    with pytest.raises(AdapterError, match="no evaluation report"):
        state.plan_promote("acme", "1")
    with pytest.raises(AdapterError, match="invalid tenant"):
        state.plan_register("a/b", content_hash="c" * 64, base_model="llm_small", path="/c")
