"""The processors' spans and instruments, on the OpenTelemetry API only.

The process that runs a processor (the worker) installs the SDK; anywhere else (unit tests, the in-process
benchmark) these are no-ops. Nothing here may carry raw text: span attributes and metric labels are names, counts,
scores and bounded kinds (``bounded_label``), never a question, a passage or an answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from schemas.events import GuardVerdict

tracer = trace.get_tracer("ragstream.processors")
meter = metrics.get_meter("ragstream.processors")

step_duration = meter.create_histogram(
    "ragstream_step_duration_seconds", unit="s", description="Time one step of the query path took"
)
guard_verdicts = meter.create_counter(
    "ragstream_guard_verdicts", unit="{verdict}", description="Guard verdicts by guard, action and reason kind"
)
cache_lookups = meter.create_counter(
    "ragstream_cache_lookups", unit="{lookup}", description="Semantic answer cache lookups by result (hit/miss)"
)
time_to_first_token = meter.create_histogram(
    "ragstream_ttft_seconds", unit="s", description="Time from a model call to its first token, by model"
)
tokens_per_second = meter.create_histogram(
    "ragstream_stream_tokens_per_second", unit="{token}/s", description="Decode speed of one model stream, by model"
)
generation_failures = meter.create_counter(
    "ragstream_generation_failures", unit="{call}", description="Model calls that failed, by model and status"
)

_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")


def bounded_label(value: str, *, fallback: str = "other") -> str:
    """``value`` when it is a short lower-case identifier (a code-defined name), else ``fallback``: a label value
    that came from anywhere else could carry text or explode the number of series."""
    return value if _LABEL.fullmatch(value) else fallback


def reason_kinds(reasons: Iterable[str]) -> set[str]:
    """The kind of each verdict reason: ``"pii_masked:EMAIL_ADDRESSx1"`` -> ``"pii_masked"``."""
    return {bounded_label(reason.split(":", 1)[0]) for reason in reasons}


def count_verdict(guard: str, verdict: GuardVerdict) -> None:
    """One count per reason kind (``none`` for a verdict without reasons)."""
    for kind in sorted(reason_kinds(verdict.reasons)) or ["none"]:
        guard_verdicts.add(1, {"guard": guard, "action": verdict.action, "kind": kind})


def mark_failed(span: Span, exc: BaseException) -> None:
    """Error status with the exception's type only: its message may quote the input."""
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


@contextmanager
def step(name: str, timings: dict[str, float] | None = None) -> Iterator[Span]:
    """One step of the query path: a child span of the stage's, its latency in ``ragstream_step_duration_seconds``,
    and (with ``timings``) its milliseconds under ``name`` in the answer's ``timings_ms``."""
    started = time.perf_counter()
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except Exception as exc:
            mark_failed(span, exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            if timings is not None:
                timings[name] = elapsed * 1000.0
            step_duration.record(elapsed, {"step": name})


class ModelCall:
    """The span and metrics of one streamed model call, with the OpenTelemetry GenAI conventions: span name
    ``chat {model}``, ``gen_ai.request.*`` parameters, ``gen_ai.usage.*`` tokens, a ``first_token`` event, and
    ``ragstream_ttft_seconds`` / ``ragstream_stream_tokens_per_second`` by model.

    The span is started without becoming current (the call is an async generator, consumed between other work) and
    ended by :meth:`end`, exactly once. Output tokens are the model's streamed responses (one per token for the
    models here and for TensorRT-LLM); input tokens are an estimate from the prompt's length, flagged as such,
    since the serving contract does not return the tokenized prompt's length.
    """

    def __init__(
        self,
        model: str,
        *,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_p: float,
        server: str = "",
        provider: str = "triton",
    ) -> None:
        from processors.query.context import estimate_tokens

        self.model = model
        self.max_tokens = max_tokens
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.tokens = 0
        host, _, port = server.rpartition(":")
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
            "gen_ai.request.top_p": top_p,
            "gen_ai.usage.input_tokens": estimate_tokens(prompt),
            "ragstream.usage.input_tokens_estimated": True,
        }
        if host and port.isdigit():
            attributes.update({"server.address": host, "server.port": int(port)})
        self.span = tracer.start_span(f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes)
        self._ended = False

    def on_token(self) -> None:
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
            ttft = now - self.started
            self.span.add_event("first_token", {"ragstream.time_to_first_token_s": ttft})
            self.span.set_attribute("ragstream.time_to_first_token_s", ttft)
            time_to_first_token.record(ttft, {"model": self.model})
        self.tokens += 1

    def end(
        self, *, cancelled: bool = False, error: BaseException | None = None, status: str = "", prompt_tokens: int = 0
    ) -> None:
        """``prompt_tokens``: the model's own count when it reported one; it replaces the estimate."""
        if self._ended:
            return
        self._ended = True
        if prompt_tokens:
            self.span.set_attributes(
                {"gen_ai.usage.input_tokens": prompt_tokens, "ragstream.usage.input_tokens_estimated": False}
            )
        now = time.monotonic()
        reason = "length" if self.tokens >= self.max_tokens else "stop"
        reason = "error" if error else "cancelled" if cancelled else reason
        self.span.set_attributes({
            "gen_ai.response.model": self.model,
            "gen_ai.response.finish_reasons": [reason],
            "gen_ai.usage.output_tokens": self.tokens,
        })  # fmt: skip
        if self.first_token_at is not None and self.tokens >= 2 and now > self.first_token_at:
            rate = (self.tokens - 1) / (now - self.first_token_at)
            self.span.set_attribute("ragstream.tokens_per_second", rate)
            tokens_per_second.record(rate, {"model": self.model})
        if error is not None:
            mark_failed(self.span, error)
            generation_failures.add(1, {"model": self.model, "status": bounded_label(status.lower(), fallback="error")})
        self.span.end()
