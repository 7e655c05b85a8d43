"""The fault suite's counting and report, from recorded client outcomes (no services): every question lands in
exactly one bin, the windows around the kill are computed from the times, a lost question or a lost acknowledged
document makes the report say NOT met, and the report names machine, load, date and commit."""

from __future__ import annotations

import importlib
import sys

from infra.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks" / "reliability"))
# A script folder, not a package: a failed import must fail these tests, not skip them.
outcomes = importlib.import_module("fault_outcomes")
Question, IngestCheck = outcomes.Question, outcomes.IngestCheck

DEADLINE = 60.0
KILL = 100.0


def question(index: int, sent: float, *, end: str = "", ended: float | None = None, code: str = "",
             asked: bool = True) -> object:  # fmt: skip
    q = Question(index, f"q{index}", sent, DEADLINE, asked=asked)
    if end:
        assert ended is not None
        q.finish(end, code, ended)
    return q


def test_every_question_lands_in_one_bin() -> None:
    done = question(0, 10.0, end="done", ended=12.0, code="stop")
    error = question(1, 10.0, end="error", ended=40.0, code="timeout")
    late = question(2, 10.0, end="done", ended=10.0 + DEADLINE + 0.1, code="stop")  # after the deadline: lost
    silent = question(3, 10.0)
    never_connected = question(4, 10.0, asked=False)
    assert [outcomes.classify(q) for q in (done, error, late, silent, never_connected)] == [
        "done", "error", "lost", "lost", "no_connection",
    ]  # fmt: skip


def test_tokens_must_join_to_the_done_text() -> None:
    q = question(0, 0.0)
    q.tokens, q.done_text = ["a", "b"], "ab"
    assert q.text_matches
    q.tokens = ["a", "b", "b"]  # a token doubled on a resume
    assert not q.text_matches


def fault_questions() -> list[object]:
    return [
        question(0, 90.0, end="done", ended=91.0, code="stop"),  # before the kill, finished before it
        question(1, 99.0, end="done", ended=105.0, code="stop"),  # in flight at the kill, done
        question(2, 99.5, end="error", ended=130.0, code="timeout"),  # in flight at the kill, clean error
        question(3, 101.0, end="error", ended=102.0, code="unavailable"),  # asked after the kill
        question(4, 104.0),  # asked after the kill, never answered: lost
        question(5, 108.0, end="done", ended=118.0, code="stop"),  # first done asked after the kill: 18 s
        question(6, 110.0, end="done", ended=111.0, code="stop"),  # answered 11 s after the kill
        question(7, 112.0, end="done", ended=113.0, code="length"),
    ]


def test_summary_counts_and_windows() -> None:
    ingest = IngestCheck("t", files=3, acked=3, runs=1, chunks_expected=30, chunks_present=30)
    s = outcomes.summarize_fault("worker", fault_questions(), kill_at=KILL, restart_s=6.0, killed_pids=[42],
                                 ingest=ingest)  # fmt: skip
    assert (s["questions"], s["done"], s["error"], s["lost"], s["no_connection"]) == (8, 5, 2, 1, 0)
    assert s["error_codes"] == {"timeout": 1, "unavailable": 1}
    assert s["in_flight_at_kill"] == 2 and s["in_flight_outcomes"] == {"done": 1, "error": 1}
    assert s["sent_after_kill"] == 5
    assert s["first_answer_after_kill_s"] == 11.0
    assert s["all_done_for_questions_sent_after_s"] == 4.0  # question 4, asked 4 s after the kill, was lost
    assert s["finish_reasons"] == {"length": 1, "stop": 4}
    assert s["goals"] == {"no_lost_questions": False, "no_acked_document_lost": True, "recovered": True}
    assert not s["goals_met"]
    assert s["lost_examples"][0]["index"] == 4


def test_a_clean_fault_meets_the_goals_and_a_missing_document_does_not() -> None:
    clean = [q for q in fault_questions() if outcomes.classify(q) != "lost"]
    ok = outcomes.summarize_fault("redis", clean, kill_at=KILL, restart_s=2.0, killed_pids=[7],
                                  ingest=IngestCheck("t", files=2, acked=2))  # fmt: skip
    assert ok["goals_met"] and ok["lost"] == 0
    missing = IngestCheck("t", files=2, acked=2, chunks_expected=20, chunks_present=12, missing_docs=["b.html"])
    bad = outcomes.summarize_fault("milvus", clean, kill_at=KILL, restart_s=2.0, killed_pids=[7], ingest=missing)
    assert bad["ingest"]["acked_lost"] == 1
    assert not bad["goals"]["no_acked_document_lost"] and not bad["goals_met"]
    never = outcomes.summarize_fault("triton", clean, kill_at=KILL, restart_s=None, killed_pids=[7], ingest=None,
                                     restart_error="ServiceError: not ready")  # fmt: skip
    assert not never["goals"]["recovered"]
    by_hand = outcomes.summarize_fault("redis", clean, kill_at=KILL, restart_s=2.0, killed_pids=[7], ingest=None,
                                       manual_restarts=["worker"])  # fmt: skip
    assert not by_hand["goals"]["recovered"] and not by_hand["goals_met"]
    report = outcomes.render_report({"faults": [by_hand]})
    assert "recovered by the restart alone: **NOT met** (not recovered: redis)" in report
    assert "also restarted: worker" in report


def test_report_states_the_figures_and_the_verdicts() -> None:
    lost_fault = outcomes.summarize_fault("kafka", fault_questions(), kill_at=KILL, restart_s=14.2, killed_pids=[1, 2],
                                          ingest=IngestCheck("ingest-kafka", files=3, acked=3, runs=2))  # fmt: skip
    summary = {
        "started_at": "2026-12-01T20:00:00+00:00",
        "git_commit": "abc123",
        "machine": {"nproc": 2, "memory_gib": 24.0, "cpu_model": "Test CPU", "os": "Linux", "python": "3.11.7"},
        "uptime_start": "20:00:00 up 1:00, load average: 1.00, 1.50, 2.00",
        "uptime_end": "20:10:00 up 1:10, load average: 2.00, 2.50, 3.00",
        "load_average_start": [1.0, 1.5, 2.0],
        "load_average_end": [2.0, 2.5, 3.0],
        "config": {"brokers": 1, "rate": 2.0, "deadline_s": 60.0},
        "faults": [lost_fault],
        "wall_s": 600,
    }
    md = outcomes.render_report(summary)
    assert "abc123" in md and "2026-12-01T20:00:00" in md and "Test CPU" in md
    assert "load average: 1.00, 1.50, 2.00" in md and "load average: 2.00, 2.50, 3.00" in md
    assert "0 questions lost" in md and "**NOT met** (1 lost)" in md
    row = next(line for line in md.splitlines() if line.startswith("| kafka |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:8] == ["14.2", "11.0", "4.0", "8", "2", "5", "2 (timeout 1, unavailable 1)"]
    assert cells[9] == "**1**" and cells[10] == "3/3" and cells[11] == "**0**" and cells[12] == "NOT met"
    assert "0 acknowledged documents lost: **met**" in md

    clean = outcomes.summarize_fault("redis", [q for q in fault_questions() if outcomes.classify(q) != "lost"],
                                     kill_at=KILL, restart_s=1.0, killed_pids=[3], ingest=None)  # fmt: skip
    ok = outcomes.render_report({**summary, "faults": [clean]})
    assert "all goals, every fault: **met**" in ok
    assert "all goals, every fault: **NOT met**" in outcomes.render_report({**summary, "faults": []})


def test_a_blocked_question_is_served_not_a_fault() -> None:
    """The input guard's ``blocked`` is a clean error that answers the question: it does not hold back recovery."""
    questions = [
        question(0, 101.0, end="error", ended=101.5, code="blocked"),
        question(1, 102.0, end="done", ended=103.0, code="stop"),
    ]
    s = outcomes.summarize_fault("bridge", questions, kill_at=KILL, restart_s=2.0, killed_pids=[1], ingest=None)
    assert s["error_codes"] == {"blocked": 1} and s["error"] == 1
    assert s["all_done_for_questions_sent_after_s"] == 0.0
    questions[0].code = "stage_failed"
    s = outcomes.summarize_fault("bridge", questions, kill_at=KILL, restart_s=2.0, killed_pids=[1], ingest=None)
    assert s["all_done_for_questions_sent_after_s"] == 1.0


def test_ingest_rounds_merge_with_their_tenants() -> None:
    a = IngestCheck("ingest-a", files=17, acked=17, runs=1, chunks_expected=459, chunks_present=459, hit_by_kill=1)
    b = IngestCheck("ingest-b", files=17, acked=8, failed=9, runs=2, chunks_expected=189, chunks_present=180,
                    missing_docs=["classes.html"], client_errors=["run 1: classes.html: MilvusException"])  # fmt: skip
    merged = outcomes.merge_ingests([a, b])
    assert (merged.rounds, merged.files, merged.acked, merged.failed, merged.runs) == (2, 34, 25, 9, 3)
    assert (merged.chunks_expected, merged.chunks_present, merged.hit_by_kill) == (648, 639, 1)
    assert merged.missing_docs == ["ingest-b/classes.html"] and merged.acked_lost == 1
    assert merged.tenant == "ingest-a and 1 more"
    assert outcomes.merge_ingests([]) is None
    s = outcomes.summarize_fault("milvus", [], kill_at=KILL, restart_s=3.0, killed_pids=[1], ingest=merged)
    assert not s["goals"]["no_acked_document_lost"]
    assert "ingest-b/classes.html" in outcomes.render_report({"faults": [s]})


def test_timeouts_say_who_gave_up_and_each_bridge_counts_its_own_questions() -> None:
    questions = []
    for i, (via, sent, end, code, stage) in enumerate([
        ("bridge", 90.0, "done", "stop", ""),
        ("bridge-2", 101.0, "error", "timeout", "bridge"),  # the bridge's request timeout
        ("bridge", 104.0, "error", "timeout", "prepare"),  # the worker's deadline check
        ("bridge-2", 110.0, "done", "stop", ""),
    ]):  # fmt: skip
        q = question(i, sent, end=end, ended=sent + 31.0, code=code)
        q.via, q.error_stage = via, stage
        questions.append(q)
    questions[1].accepted_at = 101.1
    s = outcomes.summarize_fault("bridge", questions, kill_at=KILL, restart_s=2.0, killed_pids=[5], ingest=None)
    assert s["timeouts"] == {"by_stage": {"bridge": 1, "prepare": 1}, "sent_after_kill_s": [1.0, 4.0],
                             "accepted": 1, "with_tokens": 0}  # fmt: skip
    assert s["by_bridge"] == {"bridge": {"questions": 2, "served": 1}, "bridge-2": {"questions": 2, "served": 1}}
    md = outcomes.render_report({"config": {"bridges": 2, "restart_by": "supervisor"}, "faults": [s]})
    assert "Served by the bridge asked: bridge 1/2, bridge-2 1/2" in md
    assert "Timeouts: given up by bridge 1, prepare 1; asked from 1.0 s to 4.0 s after the kill" in md
    assert "restarted by the project's supervisor" in md and "2 bridge(s)" in md
