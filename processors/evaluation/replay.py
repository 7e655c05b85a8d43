"""Replay diffs: how a candidate configuration (model, prompt version) answers recorded traffic differently.

Pure code; reading the ``queries`` log and re-issuing requests is :mod:`streams.clients.replay`. Each recorded request
is answered twice in the same replay run, once with its recorded options (the baseline) and once with the
candidate's, so a difference comes from the change and not from an index, cache or load that moved since the
traffic was recorded (the original answers are often gone anyway: bridge reply topics keep minutes, ``answers``
one day).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.evaluation import metrics as m

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SIMILAR = 0.9  # cosine at or above which two answers count as the same answer reworded


@dataclass
class Outcome:
    """One answer to one re-issued request."""

    request_id: str
    text: str = ""
    refused: bool = False
    failed: bool = False
    error: str = ""
    finish_reason: str = ""
    chunk_ids: list[str] = field(default_factory=list)
    ttft_ms: float | None = None
    total_ms: float | None = None
    model: str = ""
    prompt_version: str = ""
    cached: bool = False


def parse_when(text: str, *, now: float | None = None) -> float:
    """Unix seconds from ISO 8601 (UTC unless it says otherwise), a Unix timestamp, or an age like ``30m``/``-2h``."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return (now if now is not None else time.time()) - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601, Unix seconds, or an age such as 30m, 2h, 1d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_offsets(spec: str) -> dict[int, tuple[int, int | None]]:
    """``"0:100-200,1:50-"`` -> {partition: (first offset, end offset exclusive or None for the current end)}."""
    ranges: dict[int, tuple[int, int | None]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)-(\d*)", part)
        if not match:
            raise ValueError(f"bad offset range {part!r}: expected PARTITION:FIRST-END (END optional)")
        first, end = int(match.group(2)), int(match.group(3)) if match.group(3) else None
        if end is not None and end < first:
            raise ValueError(f"bad offset range {part!r}: end before first")
        ranges[int(match.group(1))] = (first, end)
    if not ranges:
        raise ValueError("no offset ranges given")
    return ranges


def citation_jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """Overlap of the cited chunks; two answers citing nothing agree (1.0)."""
    left, right = set(a), set(b)
    if not left and not right:
        return 1.0
    return len(left & right) / len(left | right)


def compare(baseline: Outcome, candidate: Outcome, similarity: float | None) -> dict[str, Any]:
    """One recorded request's diff; latency deltas are candidate minus baseline."""

    def delta(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else round(y - x, 2)

    both_answered = not (baseline.failed or candidate.failed or baseline.refused or candidate.refused)
    return {
        "answer_similarity": round(similarity, 4) if similarity is not None and both_answered else None,
        "answer_token_f1": m.token_f1(candidate.text, baseline.text) if both_answered else None,
        "identical": baseline.text == candidate.text and not baseline.failed and not candidate.failed,
        "refusal_change": (
            "newly refused"
            if candidate.refused and not baseline.refused
            else "newly answered"
            if baseline.refused and not candidate.refused
            else ""
        ),
        "citation_jaccard": round(citation_jaccard(baseline.chunk_ids, candidate.chunk_ids), 4),
        "citations_added": sorted(set(candidate.chunk_ids) - set(baseline.chunk_ids)),
        "citations_removed": sorted(set(baseline.chunk_ids) - set(candidate.chunk_ids)),
        "ttft_delta_ms": delta(baseline.ttft_ms, candidate.ttft_ms),
        "total_delta_ms": delta(baseline.total_ms, candidate.total_ms),
    }


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": m.percentile(values, 50),
        "p95": m.percentile(values, 95),
        "mean": m.mean_of(values),
    }


def summarize_replay(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregates over ``pairs`` (each: ``baseline``/``candidate`` outcome dicts and ``diff`` from :func:`compare`)."""
    n = len(pairs)
    diffs = [p["diff"] for p in pairs]
    sims = [d["answer_similarity"] for d in diffs if d["answer_similarity"] is not None]
    f1s = [d["answer_token_f1"] for d in diffs if d["answer_token_f1"] is not None]
    out: dict[str, Any] = {
        "answers": {
            "compared (both answered)": len(sims),
            "identical text": sum(1 for d in diffs if d["identical"]),
            "mean similarity (cosine)": m.mean_of(sims),
            "mean token F1": m.mean_of(f1s),
            f"changed (cosine < {SIMILAR})": sum(1 for s in sims if s < SIMILAR),
        },
        "refusals": {
            "baseline refused": sum(1 for p in pairs if p["baseline"]["refused"]),
            "candidate refused": sum(1 for p in pairs if p["candidate"]["refused"]),
            "newly refused": sum(1 for d in diffs if d["refusal_change"] == "newly refused"),
            "newly answered": sum(1 for d in diffs if d["refusal_change"] == "newly answered"),
        },
        "citations": {
            "mean jaccard of cited chunks": m.mean_of(d["citation_jaccard"] for d in diffs),
            "requests with different citations": sum(
                1 for d in diffs if d["citations_added"] or d["citations_removed"]
            ),
        },
        "errors": {
            "baseline": sum(1 for p in pairs if p["baseline"]["failed"]),
            "candidate": sum(1 for p in pairs if p["candidate"]["failed"]),
        },
        "latency_ms": {},
        "distributions": {
            "similarity": sims,
            "ttft_delta_ms": [d["ttft_delta_ms"] for d in diffs if d["ttft_delta_ms"] is not None],
            "total_delta_ms": [d["total_delta_ms"] for d in diffs if d["total_delta_ms"] is not None],
        },
        "requests": n,
    }
    for measure in ("ttft", "total"):
        base = [p["baseline"][f"{measure}_ms"] for p in pairs if p["baseline"][f"{measure}_ms"] is not None]
        cand = [p["candidate"][f"{measure}_ms"] for p in pairs if p["candidate"][f"{measure}_ms"] is not None]
        b, c = _stats(base), _stats(cand)
        paired = out["distributions"][f"{measure}_delta_ms"]
        out["latency_ms"][measure] = {
            "baseline": b,
            "candidate": c,
            "delta_p50": None if b["p50"] is None or c["p50"] is None else float(c["p50"]) - float(b["p50"]),
            "delta_mean": m.mean_of(paired),
        }
    return out
