"""The worker's and bridge's metric helpers without services: outcome labels stay bounded, and the
/metrics /healthz /readyz endpoint answers what probes and Prometheus ask."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from schemas.events import AnswerDone, AnswerError, TokenDelta
from streams.metrics import outcome_of
from streams.telemetry import serve_endpoints


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (AnswerDone(request_id="r", text="t"), ("done", "")),
        (AnswerDone(request_id="r", text="t", finish_reason="length"), ("done", "")),
        (AnswerDone(request_id="r", text="t", cached=True), ("cached", "")),
        (AnswerDone(request_id="r", text="t", finish_reason="refused"), ("refused", "")),
        (AnswerDone(request_id="r", text="t", finish_reason="cancelled"), ("cancelled", "")),
        (AnswerError(request_id="r", code="blocked", message="m"), ("blocked", "")),
        (AnswerError(request_id="r", code="stage_failed", message="m"), ("error", "stage_failed")),
        # A code is a label only when it looks like a code: anything else cannot carry text into a series name.
        (AnswerError(request_id="r", code="jane@example.org", message="m"), ("error", "other")),
        (AnswerError(request_id="r", code="x" * 200, message="m"), ("error", "other")),
        (TokenDelta(request_id="r", seq=0, text="t"), None),
    ],
)
def test_answers_are_counted_by_outcome_with_bounded_codes(event: object, expected: tuple[str, str] | None) -> None:
    assert outcome_of(event) == expected


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_endpoints_serve_metrics_liveness_and_readiness_as_it_changes() -> None:
    state = {"ready": False}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoints = serve_endpoints("127.0.0.1", port, lambda: state["ready"])
    assert endpoints is not None
    try:
        base = f"http://127.0.0.1:{port}"
        assert _status(f"{base}/healthz") == 200
        assert _status(f"{base}/readyz") == 503
        state["ready"] = True
        assert _status(f"{base}/readyz") == 200
        assert _status(f"{base}/metrics") == 200
        assert _status(f"{base}/nothing-here") == 404
        # A second process on the same port keeps running without an endpoint instead of failing.
        assert serve_endpoints("127.0.0.1", port, lambda: True) is None
    finally:
        endpoints.stop()


def test_port_zero_means_no_endpoint() -> None:
    assert serve_endpoints("127.0.0.1", 0, lambda: True) is None
