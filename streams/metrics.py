"""The worker's and the bridge's instruments: what an operator reads on the dashboard
(``infra/deploy/grafana/dashboards/ragstream.json``), by Prometheus name.

Labels are bounded: stage, topic, outcome, error code, document status and model names come from code or from
configuration, never from a request (no request ids, tenants or text). The query path's own steps, guard verdicts,
cache lookups and model calls are counted where they happen, in :mod:`processors.telemetry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from processors.telemetry import bounded_label, cache_lookups
from schemas.events import AnswerDone, AnswerError
from streams.telemetry import meter

log = logging.getLogger(__name__)

# -- every Kafka stage (streams/worker/stage.py) ---------------------------------------------------------------
stage_duration = meter.create_histogram(
    "ragstream_stage_duration_seconds", unit="s", description="Time a stage spent on one event"
)
stage_errors = meter.create_counter(
    "ragstream_stage_errors", unit="{error}", description="Events a stage failed on, by stage and reason"
)
dead_letters = meter.create_counter(
    "ragstream_dead_letters", unit="{message}", description="Events written to the dead-letter topic, by source topic"
)

# -- answers (streams/worker/outbox.py: every answer leaves the worker through Outbox.reply) ---------------------
requests = meter.create_counter(
    "ragstream_requests",
    unit="{request}",
    description="Answered requests by outcome (done, cached, refused, blocked, cancelled, error) and error code",
)

# -- ingestion (streams/worker/agents/ingest.py) -----------------------------------------------------------------
ingest_documents = meter.create_counter(
    "ragstream_ingest_documents", unit="{document}", description="Documents acknowledged, by status"
)
ingest_chunks = meter.create_counter("ragstream_ingest_chunks", unit="{chunk}", description="Chunks made live")

# -- the bridge (streams/bridge/server.py) ---------------------------------------------------------------------
bridge_connections = meter.create_up_down_counter(
    "ragstream_bridge_connections", unit="{connection}", description="Open WebSocket connections"
)
bridge_asks = meter.create_counter("ragstream_bridge_asks", unit="{request}", description="Questions sent to Kafka")
bridge_first_token = meter.create_histogram(
    "ragstream_bridge_first_token_seconds",
    unit="s",
    description="From a client's ask to its first answer message, as the client sees it",
)
bridge_send_queue_drops = meter.create_counter(
    "ragstream_bridge_send_queue_drops",
    unit="{message}",
    description="Messages not queued to a client because its send queue was full (the client is disconnected)",
)
bridge_timeouts = meter.create_counter(
    "ragstream_bridge_timeouts", unit="{request}", description="Requests the bridge ended with a timeout"
)

OUTCOMES = ("done", "cached", "refused", "blocked", "cancelled", "error")
# The error codes the worker itself answers with (stage failures may add their own).
ERROR_CODES = ("bad_request", "stage_failed", "timeout")


def outcome_of(event: Any) -> tuple[str, str] | None:
    """``(outcome, code)`` of a terminal answer event, None for anything else (a token delta)."""
    if isinstance(event, AnswerError):
        code = bounded_label(event.code)
        return ("blocked", "") if code == "blocked" else ("error", code)
    if isinstance(event, AnswerDone):
        if event.cached:
            return "cached", ""
        reason = event.finish_reason
        return ("done", "") if reason in ("stop", "length") else (bounded_label(reason), "")
    return None


def count_answer(event: Any) -> None:
    outcome = outcome_of(event)
    if outcome is not None:
        requests.add(1, {"outcome": outcome[0], "code": outcome[1]})


def start_counting(topics: Iterable[str]) -> None:
    """Show every outcome, document status and dead-letter source topic at 0 from the start: a rate needs a sample
    before the first increment, and an on-call panel needs a series on a quiet day too."""
    for outcome in OUTCOMES:
        for code in ERROR_CODES if outcome == "error" else ("",):
            requests.add(0, {"outcome": outcome, "code": code})
    for topic in topics:
        dead_letters.add(0, {"topic": topic})
    for status in ("indexed", "unchanged", "deleted", "failed"):
        ingest_documents.add(0, {"status": status})
    ingest_chunks.add(0)
    for result in ("hit", "miss"):
        cache_lookups.add(0, {"result": result})


def start_counting_bridge() -> None:
    """The bridge's counters at 0 from the start (see :func:`start_counting`)."""
    for counter in (bridge_connections, bridge_asks, bridge_send_queue_drops, bridge_timeouts):
        counter.add(0)


class ConsumerLag:
    """Messages waiting in this worker's assigned partitions, per topic: the end offset minus the group's committed
    offset (what kafka-exporter would show for the partitions this worker owns), sampled every ``interval_s`` on the
    worker's event loop and exported as ``ragstream_consumer_lag``. Summed over workers it is the group's lag."""

    def __init__(self, app: Any, *, interval_s: float = 5.0) -> None:
        self.app = app
        self.interval_s = interval_s
        self.lag: dict[str, int] = {}
        _lag_sources.append(self)

    async def sample(self) -> None:
        consumer = self.app.consumer
        assigned = list(consumer.assignment())
        ends = await consumer.highwaters(*assigned) if assigned else {}
        # Faust's own record of the group's commits; a partition without one is read from its earliest offset.
        committed = {tp: consumer._committed_offset.get(tp) for tp in assigned}
        uncommitted = [tp for tp, offset in committed.items() if offset is None]
        earliest = await consumer.earliest_offsets(*uncommitted) if uncommitted else {}
        lag: dict[str, int] = {}
        for tp in assigned:
            end, start = ends.get(tp), committed[tp] if committed[tp] is not None else earliest.get(tp)
            if end is not None and start is not None:
                lag[tp.topic] = lag.get(tp.topic, 0) + max(int(end) - int(start), 0)
        self.lag = lag

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the consumer is rebalancing or not started yet: try again next round
                log.debug("consumer lag not sampled: %s", type(exc).__name__)
            await asyncio.sleep(self.interval_s)


_lag_sources: list[ConsumerLag] = []


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[str, int] = {}
    for source in _lag_sources:
        for topic, lag in source.lag.items():
            totals[topic] = totals.get(topic, 0) + lag
    return [Observation(lag, {"topic": topic}) for topic, lag in sorted(totals.items())]


meter.create_observable_gauge(
    "ragstream_consumer_lag",
    callbacks=[_observe_lag],
    unit="{message}",
    description="Messages not yet processed in the partitions this worker owns, by topic",
)
