"""What the fault suite counts and how it reports it: no services here, so the counting and the report are tested
on their own (tests/benchmarks/test_fault_outcomes.py).

A :class:`Question` is one client's question over the WebSocket bridge as the client saw it (times are seconds on
one monotonic clock). :func:`classify` puts it in exactly one bin:

- ``done``: a ``done`` arrived within the client's deadline;
- ``error``: an ``error`` arrived within the deadline (a clean error: the client knows, and the code says why);
- ``no_connection``: the client never got a socket open before its deadline (it knew at once, every attempt was
  refused), so nothing was ever asked;
- ``lost``: the question was sent but neither ``done`` nor ``error`` arrived within the deadline. The goal is 0.

:func:`summarize_fault` counts one fault's questions and its ingest check; :func:`render_report` writes the
Markdown report from the suite's summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

BINS = ("done", "error", "no_connection", "lost")
# Errors that are the pipeline's answer to the question itself, not a fault: the input guard blocked it. Counted
# as clean errors, but a question that gets one was served (the recovery figures treat it as answered).
ANSWERED_ERRORS = frozenset({"blocked"})


@dataclass
class Question:
    index: int
    text: str
    sent_at: float  # the first attempt to ask
    deadline_s: float
    asked: bool = False  # an ``ask`` frame went out on an open socket at least once
    request_id: str = ""
    accepted_at: float | None = None
    ended_at: float | None = None
    end: str = ""  # "done" or "error" once one arrived
    code: str = ""  # the error's code, or the done's finish_reason
    tokens: list[str] = field(default_factory=list)
    last_seq: int = -1
    done_text: str | None = None
    seq_gaps: int = 0  # a token whose seq skipped ahead of the last one received
    reconnects: int = 0  # sockets opened after the first
    resumes: int = 0  # ``resume`` frames sent after a reconnect
    reasks: int = 0  # ``ask`` sent again: the socket dropped before ``accepted`` named the request
    connect_failures: int = 0
    via: str = ""  # the bridge instance it asked (a reconnect goes back to it: resume needs its journal)
    error_stage: str = ""  # the error's ``stage``: who gave up (``bridge``, or the worker's stage for a deadline)
    problems: list[str] = field(default_factory=list)  # what went wrong on the way (closed sockets, refusals)

    def remaining(self, now: float) -> float:
        return self.sent_at + self.deadline_s - now

    def finish(self, end: str, code: str, now: float) -> None:
        self.end, self.code, self.ended_at = end, code, now

    @property
    def text_matches(self) -> bool:
        """The tokens received (each seq once) join to ``done.text``: nothing was dropped or doubled on a resume."""
        return self.done_text is None or "".join(self.tokens) == self.done_text


def classify(q: Question) -> str:
    if q.end and q.ended_at is not None and q.ended_at - q.sent_at <= q.deadline_s:
        return q.end
    if not q.asked:
        return "no_connection"
    return "lost"


def served(q: Question) -> bool:
    """``done``, or an error that answers the question itself (:data:`ANSWERED_ERRORS`)."""
    bin_ = classify(q)
    return bin_ == "done" or (bin_ == "error" and q.code in ANSWERED_ERRORS)


@dataclass
class IngestCheck:
    """One fault's ingest: the client's report(s), then every acknowledged document's chunks looked up in Milvus
    and compared with the same document's chunks in the baseline ingest (same file, same chunker)."""

    tenant: str
    files: int = 0
    acked: int = 0  # documents acknowledged as indexed (or unchanged) by the worker, over every run
    failed: int = 0  # acknowledged as failed, or not sent (the client says so: not lost)
    timed_out: int = 0  # no acknowledgement before the client gave up (the client says so: not lost)
    runs: int = 0  # 1, or 2 when the first run did not end clean and was run again after the restart
    client_errors: list[str] = field(default_factory=list)
    chunks_expected: int = 0  # the acked documents' chunks in the baseline
    chunks_present: int = 0
    missing_docs: list[str] = field(default_factory=list)  # acked, but fewer chunks present than in the baseline
    extra_docs: list[str] = field(default_factory=list)  # acked, more chunks than the baseline (duplicates)
    seconds: float = 0.0
    rounds: int = 1  # ingests of the folder, each into a tenant of its own (merged by :func:`merge_ingests`)
    hit_by_kill: int = 0  # rounds whose first run was under way when the kill came

    @property
    def acked_lost(self) -> int:
        return len(self.missing_docs)


def merge_ingests(checks: list[IngestCheck]) -> IngestCheck | None:
    """One fault's ingest rounds as one check: counts summed, documents named with their tenant."""
    if not checks:
        return None
    merged = IngestCheck(f"{checks[0].tenant} and {len(checks) - 1} more" if len(checks) > 1 else checks[0].tenant)
    merged.rounds = len(checks)
    for c in checks:
        merged.files += c.files
        merged.acked += c.acked
        merged.failed += c.failed
        merged.timed_out += c.timed_out
        merged.runs += c.runs
        merged.chunks_expected += c.chunks_expected
        merged.chunks_present += c.chunks_present
        merged.seconds += c.seconds
        merged.hit_by_kill += c.hit_by_kill
        merged.missing_docs += [f"{c.tenant}/{d}" for d in c.missing_docs]
        merged.extra_docs += [f"{c.tenant}/{d}" for d in c.extra_docs]
        merged.client_errors += c.client_errors
    merged.client_errors = merged.client_errors[:8]
    return merged


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def summarize_fault(
    fault: str,
    questions: list[Question],
    *,
    kill_at: float,
    restart_s: float | None,
    killed_pids: list[int],
    ingest: IngestCheck | None,
    restart_error: str = "",
    manual_restarts: list[str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """One fault's figures. ``kill_at`` is the moment of the kill on the questions' clock; ``restart_s`` how long the
    supervisor's restart took until the service's readiness probe passed (None: it did not come back);
    ``manual_restarts`` the other services that had to be restarted before the stack served again (then the fault
    was not recovered by its own restart)."""
    bins = Counter(classify(q) for q in questions)
    in_flight = [q for q in questions if q.sent_at < kill_at and (q.ended_at is None or q.ended_at > kill_at)]
    after = [q for q in questions if q.sent_at >= kill_at]
    error_codes = Counter(q.code for q in questions if classify(q) == "error")
    answered_after = [q.ended_at - kill_at for q in after if classify(q) == "done" and q.ended_at is not None]
    first_answer_s = min(answered_after) if answered_after else None
    # Every question asked after this moment (relative to the kill) was answered with done.
    failed_after = [q.sent_at - kill_at for q in after if not served(q)]
    all_done_after_s = max(failed_after) if failed_after else 0.0
    lost = [q for q in questions if classify(q) == "lost"]
    timeouts = [q for q in questions if classify(q) == "error" and q.code == "timeout"]
    by_bridge: dict[str, dict[str, int]] = {}
    for q in questions:
        counts = by_bridge.setdefault(q.via or "?", {"questions": 0, "served": 0})
        counts["questions"] += 1
        counts["served"] += served(q)
    goals = {
        "no_lost_questions": bins["lost"] == 0,
        "no_acked_document_lost": ingest is None or ingest.acked_lost == 0,
        "recovered": restart_s is not None and first_answer_s is not None and not manual_restarts,
    }
    return {
        "fault": fault,
        "killed_pids": killed_pids,
        "restart_s": _round(restart_s),
        "restart_error": restart_error,
        "manual_restarts": manual_restarts or [],
        "first_answer_after_kill_s": _round(first_answer_s),
        "all_done_for_questions_sent_after_s": _round(all_done_after_s) if after else None,
        "questions": len(questions),
        "in_flight_at_kill": len(in_flight),
        "sent_after_kill": len(after),
        **{bin_: bins[bin_] for bin_ in BINS},
        "error_codes": dict(sorted(error_codes.items())),
        "in_flight_outcomes": dict(sorted(Counter(classify(q) for q in in_flight).items())),
        "finish_reasons": dict(sorted(Counter(q.code for q in questions if classify(q) == "done").items())),
        "reconnects": sum(q.reconnects for q in questions),
        "resumes": sum(q.resumes for q in questions),
        "reasks": sum(q.reasks for q in questions),
        "seq_gaps": sum(q.seq_gaps for q in questions),
        "text_mismatches": sum(1 for q in questions if classify(q) == "done" and not q.text_matches),
        "by_bridge": dict(sorted(by_bridge.items())),
        # Who gave up on the timed-out questions (the bridge's request timeout, or the worker's deadline check at a
        # stage), and when they were asked relative to the kill: a backlog shows as a band of asks after it.
        "timeouts": {
            "by_stage": dict(sorted(Counter(q.error_stage or "?" for q in timeouts).items())),
            "sent_after_kill_s": [round(min(t), 1), round(max(t), 1)]
            if (t := [q.sent_at - kill_at for q in timeouts])
            else [],
            "accepted": sum(1 for q in timeouts if q.accepted_at is not None),
            "with_tokens": sum(1 for q in timeouts if q.tokens),
        },
        "lost_examples": [
            {
                "index": q.index,
                "sent_after_kill_s": round(q.sent_at - kill_at, 1),
                "request_id": q.request_id,
                "accepted": q.accepted_at is not None,
                "tokens": len(q.tokens),
                "problems": q.problems[-3:],
            }
            for q in lost[:5]
        ],
        "ingest": asdict(ingest) | {"acked_lost": ingest.acked_lost} if ingest is not None else None,
        "goals": goals,
        "goals_met": all(goals.values()),
        "notes": notes or [],
    }


# --- the report --------------------------------------------------------------------------------------------------
def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{code or '?'} {n}" for code, n in codes.items()) or "—"


def _ingest_cell(ingest: dict[str, Any] | None) -> str:
    if ingest is None:
        return "—"
    return f"{ingest['acked']}/{ingest['files']}"


def _load(values: Any) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def _restart_text(config: dict[str, Any]) -> str:
    if config.get("restart_by") == "supervisor":
        return (
            "restarted by the project's supervisor (`ragstream up supervisor`, a check every "
            f"{config.get('supervisor_check_s', '?')} s) with no help"
        )
    return (
        f"restart {config.get('restart_delay_s', '?')} s later with the project's start code (`Stack.up([service])`, "
        "as a supervisor would)"
    )


def render_report(summary: dict[str, Any]) -> str:
    """The Markdown report: where and when it ran, the goals' verdict, one row per fault, then each fault's
    details. Everything it states comes from ``summary`` (what :func:`summarize_fault` measured)."""
    faults: list[dict[str, Any]] = summary["faults"]
    config = summary.get("config", {})
    machine = summary.get("machine", {})
    lost = sum(f["lost"] for f in faults)
    docs_lost = sum((f["ingest"] or {}).get("acked_lost", 0) for f in faults)
    unrecovered = [f["fault"] for f in faults if not f["goals"]["recovered"]]
    met = bool(faults) and all(f["goals_met"] for f in faults)
    lines = [
        "# ragstream fault suite: kill -9 under a steady query stream and an ingest",
        "",
        f"- Date: {summary.get('started_at', '?')} (UTC), {summary.get('wall_s', '?')} s wall",
        f"- Commit: `{summary.get('git_commit', '?')}`",
        f"- Machine: {machine.get('nproc', '?')} CPUs (`nproc`), {machine.get('memory_gib', '?')} GiB, "
        f"{machine.get('cpu_model', '?')}; {machine.get('os', '?')}, Python {machine.get('python', '?')}",
        f"- Load (`uptime`): start `{summary.get('uptime_start', '?')}`; end `{summary.get('uptime_end', '?')}`",
        f"- Load average 1/5/15 min: start {_load(summary.get('load_average_start'))}, "
        f"end {_load(summary.get('load_average_end'))}",
        f"- Command: `{summary.get('command', '?')}`",
        f"- Stack: private (own data dir, free ports), Kafka brokers: {config.get('brokers', '?')}, "
        f"{config.get('workers', 1)} worker(s) (`ragstream up worker`, one consumer group), "
        f"{config.get('bridges', 1)} bridge(s) (`ragstream up bridge`, instance "
        f"`{config.get('bridge_instance', '?')}`{' and -2, ...' if config.get('bridges', 1) > 1 else ''}), "
        f"Triton models `{config.get('models', '?')}`",
        f"- Load: {config.get('rate', '?')} questions/s over the WebSocket bridge(s) (question n to bridge n mod "
        "the count), each on its own socket, model "
        f"`{config.get('model', '?')}`, max_tokens {config.get('max_tokens', '?')}, cache off; client deadline "
        f"{config.get('deadline_s', '?')} s per question (bridge `request_timeout_s` "
        f"{config.get('request_timeout_s', '?')} s); a client whose socket drops reconnects and sends `resume` "
        "with its last seq (or asks again when the drop came before `accepted`)",
        f"- Ingest during each fault: `{config.get('ingest_dir', '?')}`, started "
        f"{config.get('ingest_lead_s', '?')} s before the kill and run through the window in rounds "
        f"({config.get('ingest_gap_s', 0)} s apart), each into a tenant of its own; afterwards every acknowledged "
        "document's chunks are counted in Milvus and compared with the same document's chunks in the baseline ingest",
        f"- Per fault: {config.get('before_s', '?')} s of load, kill -9 of the service's process group by the PID "
        f"its start recorded (the first instance: `kafka`, `worker`, `bridge`), {_restart_text(config)}, load "
        f"until {config.get('window_s', '?')} s after the kill, then every client waits out its deadline",
        "",
        "## Goals",
        "",
        f"- 0 questions lost (no `done` and no `error` within the deadline): **{'met' if lost == 0 else 'NOT met'}** "
        f"({lost} lost)",
        f"- 0 acknowledged documents lost: **{'met' if docs_lost == 0 else 'NOT met'}** ({docs_lost} lost)",
        f"- every fault recovered by the restart alone: **{'met' if not unrecovered else 'NOT met'}**"
        + (f" (not recovered: {', '.join(unrecovered)})" if unrecovered else ""),
        f"- all goals, every fault: **{'met' if met else 'NOT met'}**",
        "",
        "## Figures",
        "",
        "Restart: kill to the restarted service's readiness probe. Answers again: kill to the first `done` of a "
        "question asked after the kill. All done after: every question asked later than this (after the kill) got "
        "`done` (or the input guard's `blocked`: an answer to that question, not a fault). Questions: every "
        "question of the fault's run; in flight: asked before the kill, unanswered at it.",
        "",
        "Fault `none`, when present, is the control: the same questions and ingest, nothing killed.",
        "",
        "| fault | restart s | answers again s | all done after s | questions | in flight at kill | done | "
        "clean errors (codes) | no connection | lost | docs acked/files | acked docs lost | goals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in faults:
        ingest = f["ingest"]
        lines.append(
            f"| {f['fault']} | {_num(f['restart_s'])} | {_num(f['first_answer_after_kill_s'])} | "
            f"{_num(f['all_done_for_questions_sent_after_s'])} | {f['questions']} | {f['in_flight_at_kill']} | "
            f"{f['done']} | {f['error']} ({_codes(f['error_codes'])}) | {f['no_connection']} | **{f['lost']}** | "
            f"{_ingest_cell(ingest)} | **{(ingest or {}).get('acked_lost', '—')}** | "
            f"{'met' if f['goals_met'] else 'NOT met'} |"
        )
    lines += ["", "## Each fault", ""]
    for f in faults:
        lines += [f"### {f['fault']}", ""]
        lines.append(f"- Killed PIDs (process group): {f['killed_pids'] or '—'}")
        if f["restart_error"]:
            lines.append(f"- Restart failed: {f['restart_error']}")
        if f["manual_restarts"]:
            lines.append(f"- NOT recovered by the restart alone; also restarted: {', '.join(f['manual_restarts'])}")
        lines.append(
            f"- In flight at the kill: {f['in_flight_at_kill']} ({_codes(f['in_flight_outcomes'])}); asked after "
            f"the kill: {f['sent_after_kill']}"
        )
        lines.append(
            f"- Done by finish reason: {_codes(f['finish_reasons'])}; reconnects {f['reconnects']}, resumes "
            f"{f['resumes']}, asked again {f['reasks']}; token seq gaps {f['seq_gaps']}, answers whose tokens do "
            f"not join to `done.text` {f['text_mismatches']}"
        )
        if len(f.get("by_bridge", {})) > 1:
            lines.append(
                "- Served by the bridge asked: "
                + ", ".join(f"{via} {c['served']}/{c['questions']}" for via, c in f["by_bridge"].items())
            )
        timeouts = f.get("timeouts", {})
        if timeouts.get("sent_after_kill_s"):
            first, last = timeouts["sent_after_kill_s"]
            lines.append(
                f"- Timeouts: given up by {_codes(timeouts['by_stage'])}; asked from {first} s to {last} s after the "
                f"kill; {timeouts['accepted']} of them accepted by the bridge, {timeouts['with_tokens']} had tokens"
            )
        for example in f["lost_examples"]:
            lines.append(f"- Lost: {example}")
        ingest = f["ingest"]
        if ingest is not None:
            lines.append(
                f"- Ingest: {ingest['rounds']} round(s) of the folder, each into its own tenant "
                f"(`{ingest['tenant']}`), "
                f"{ingest['hit_by_kill']} under way at the kill; {ingest['files']} documents sent, "
                f"{ingest['acked']} acknowledged, {ingest['failed']} acknowledged as failed or not sent (the client "
                f"knows), {ingest['timed_out']} timed out, {ingest['runs']} client run(s) (a round that did not end "
                f"clean runs once more after the recovery); chunks of acknowledged documents: "
                f"{ingest['chunks_present']} present of "
                f"{ingest['chunks_expected']} in the baseline; acknowledged documents missing chunks: "
                f"{ingest['missing_docs'] or 'none'}; with more chunks than the baseline: "
                f"{ingest['extra_docs'] or 'none'}"
            )
            for error in ingest["client_errors"]:
                lines.append(f"- Ingest client: {error}")
        for note in f["notes"]:
            lines.append(f"- {note}")
        lines.append("")
    lines += [
        "## Scope",
        "",
        f"- {config.get('workers', 1)} worker(s) and {config.get('bridges', 1)} bridge(s); one fault at a time; "
        + (
            "each killed service is restarted by the project's supervisor (`ragstream up supervisor`), which found "
            "the dead process by itself: no step of the suite restarts anything."
            if config.get("restart_by") == "supervisor"
            else "each killed service is restarted by the suite with the project's start code, as a supervisor would."
        ),
        "- A question counts once, by what its client finally saw; a client that asked again after a drop before "
        "`accepted` is one question (the count of such re-asks is shown per fault).",
        "",
    ]
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in summary["notes"]] + [""]
    return "\n".join(lines)
