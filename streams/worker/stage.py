"""The one wrapper that turns a processor into a Faust agent body.

For every Kafka message it decodes the value, continues the trace from the headers, calls the handler, and on any
failure writes a dead letter (reason + original bytes) and, when the event names a client, answers that client
with an :class:`~schemas.events.AnswerError`. The worker never stops on a bad message. Telemetry never carries raw
PII: dead-letter payloads, reasons and log lines have structured PII masked first.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust
import msgspec
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from processors.guardrails.pii import mask_patterns
from schemas.codec import DecodeError, EventDecoder
from schemas.events import AnswerError, DeadLetter, QueryRequest, ReplyTo
from schemas.topics import Topic
from streams import metrics, telemetry
from streams.worker.outbox import Outbox

log = logging.getLogger(__name__)

In = TypeVar("In")

MAX_REASON_CHARS = 2000
# A dead letter must fit the broker's 1 MB message limit with its headers; a larger input keeps its first bytes.
MAX_DEAD_LETTER_VALUE = 512 * 1024
MAX_KEY = 1024  # bytes of a key or header kept in a dead letter
MAX_REQUEST_ID = 256  # longer ids are not a client's: no error reply is addressed to them


class StageFailure(Exception):
    """A handler's deliberate refusal: ``code`` and ``message`` go to the client as they are."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class _ReplyEnvelope(msgspec.Struct):
    """What a stage needs to answer a client even when the rest of the event is unreadable."""

    request_id: str
    reply_to: ReplyTo


class _WrappedEnvelope(msgspec.Struct):
    request: _ReplyEnvelope


_direct = msgspec.msgpack.Decoder(_ReplyEnvelope)
_wrapped = msgspec.msgpack.Decoder(_WrappedEnvelope)


def reply_address(value: bytes) -> _ReplyEnvelope | None:
    """The client to answer, from a request event or a stage event that wraps one; None if unreadable (anything
    the decoder raises on, deep nesting included, means unreadable)."""
    for decode in (_direct.decode, lambda raw: _wrapped.decode(raw).request):
        try:
            return decode(value)
        except (msgspec.DecodeError, RecursionError, ValueError, TypeError, MemoryError):
            continue
    return None


def _mask_strings(value: Any) -> Any:
    if isinstance(value, str):
        return mask_patterns(value).text
    if isinstance(value, list):
        return [_mask_strings(item) for item in value]
    if isinstance(value, dict):
        return {key: _mask_strings(item) for key, item in value.items()}
    return value


def masked_payload(value: bytes) -> tuple[bytes, bool]:
    """The bytes to keep in a dead letter, with structured PII masked; True if anything was masked.

    A decodable msgpack value keeps its structure (every string field masked); anything else is masked as
    latin-1 text, which maps bytes one to one, so the non-PII bytes survive unchanged.
    """
    try:
        decoded = msgspec.msgpack.decode(value)
        cleaned = _mask_strings(decoded)
    except (msgspec.DecodeError, RecursionError, ValueError, TypeError, MemoryError):
        text = value.decode("latin-1")
        masked = mask_patterns(text).text
        return (value, False) if masked == text else (masked.encode("latin-1", errors="replace"), True)
    if cleaned == decoded:
        return value, False
    return msgspec.msgpack.encode(cleaned), True


def fitted(value: bytes, limit: int = MAX_DEAD_LETTER_VALUE) -> tuple[bytes, str]:
    """``value`` cut to ``limit`` bytes, and a note for the reason saying what was cut (with the whole value's
    size and sha256, so the original can be found in the source topic); no note when it fits."""
    if len(value) <= limit:
        return value, ""
    digest = hashlib.sha256(value).hexdigest()
    return value[:limit], f" [value truncated to {limit} of {len(value)} bytes; sha256 {digest}]"


def normalize_headers(raw: Any) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {str(key): bytes(value) if value is not None else b"" for key, value in items}


@dataclass
class StageContext:
    stage: str
    outbox: Outbox
    headers: dict[str, bytes]
    message: Any  # faust Message, for handlers that need offsets


Handler = Callable[[In, StageContext], Awaitable[None]]


class Stage(Generic[In]):
    """Decode -> trace -> handle -> (on failure) dead letter + error reply."""

    def __init__(self, name: str, event_type: Any, handler: Handler[In], outbox: Outbox) -> None:
        self.name = name
        self.decoder: EventDecoder[In] = EventDecoder(event_type)
        self.handler = handler
        self.outbox = outbox
        self.processed = 0
        self.failed = 0

    async def run(self, stream: faust.StreamT[Any]) -> None:
        """The agent body: one call per consumed message, never raising out of the loop."""
        async for event in stream.events():
            try:
                await self.process(event.message)
            except Exception as exc:  # a defect in the failure path itself: the next message is still handled
                log.error("stage %s could not handle %s[%s]@%s: %s", self.name, event.message.topic,
                          event.message.partition, event.message.offset, type(exc).__name__)  # fmt: skip

    async def process(self, message: Any) -> None:
        headers = normalize_headers(getattr(message, "headers", None))
        value: bytes = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        started = time.perf_counter()
        with telemetry.tracer.start_as_current_span(
            f"stage {self.name}", context=telemetry.context_from_headers(headers), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.destination.name", str(message.topic))
            span.set_attribute("messaging.kafka.partition", int(message.partition))
            span.set_attribute("messaging.kafka.offset", int(message.offset))
            try:
                event = self.decoder.decode(value)
            except DecodeError as exc:
                await self._fail(message, headers, value, "DecodeError", f"undecodable event: {exc}", None)
                return
            try:
                await self.handler(event, StageContext(self.name, self.outbox, headers, message))
                self.processed += 1
            except StageFailure as exc:
                await self._fail(message, headers, value, exc.code, exc.message, exc)
            except Exception as exc:
                # No traceback text in the log: exception messages can quote the input. The masked reason and
                # the failing code location say enough to find the bug.
                frame = exc.__traceback__
                while frame is not None and frame.tb_next is not None:
                    frame = frame.tb_next
                where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame is not None else "?"
                log.error("stage %s failed on %s[%s]@%s: %s: %s (at %s)", self.name, message.topic,
                          message.partition, message.offset, type(exc).__name__,
                          mask_patterns(str(exc)).text[:500], where)  # fmt: skip
                await self._fail(message, headers, value, type(exc).__name__, str(exc), exc)
            finally:
                metrics.stage_duration.record(time.perf_counter() - started, {"stage": self.name})

    async def _fail(
        self,
        message: Any,
        headers: dict[str, bytes],
        value: bytes,
        error_type: str,
        reason: str,
        exc: Exception | None,
    ) -> None:
        self.failed += 1
        reason = mask_patterns(reason[:MAX_REASON_CHARS]).text
        metrics.stage_errors.add(1, {"stage": self.name, "reason": error_type})
        trace.get_current_span().set_status(Status(StatusCode.ERROR, error_type))
        envelope = reply_address(value)
        if envelope is not None and len(envelope.request_id) > MAX_REQUEST_ID:
            reason += f" [no error reply: request_id of {len(envelope.request_id)} characters]"
            envelope = None
        if envelope is not None:
            retryable = exc.retryable if isinstance(exc, StageFailure) else bool(getattr(exc, "retryable", False))
            error = AnswerError(
                request_id=envelope.request_id,
                code=error_type if isinstance(exc, StageFailure) else "stage_failed",
                message=reason if isinstance(exc, StageFailure) else f"{self.name} failed: {error_type}",
                stage=self.name,
                retryable=retryable,
            )
            try:
                await self.outbox.reply(envelope.reply_to, envelope.request_id, error)
            except Exception:
                log.exception("could not send the error reply for %s", envelope.request_id)
        if isinstance(exc, StageFailure):
            return  # a deliberate refusal is an answer, not a poisoned input
        masked_value, masked = masked_payload(value)
        kept, truncated = fitted(masked_value)
        key = bytes(message.key) if message.key is not None else None
        letter = DeadLetter(
            source_topic=str(message.topic),
            partition=int(message.partition),
            offset=int(message.offset),
            stage=self.name,
            error_type=error_type,
            reason=reason + truncated,
            key=key[:MAX_KEY] if key is not None else None,
            value=kept,
            headers={name: raw[:MAX_KEY] for name, raw in list(headers.items())[:32]},
            value_masked=masked,
        )
        metrics.dead_letters.add(1, {"topic": str(message.topic)})
        try:
            await self.outbox.emit(Topic.DEAD_LETTERS, message.key, letter)
        except Exception as produce_error:
            # The input stays in its topic at this offset; the log line says where, and the stage goes on.
            log.error("could not write the dead letter for %s[%s]@%s: %s: %s", message.topic, message.partition,
                      message.offset, type(produce_error).__name__,
                      mask_patterns(str(produce_error)).text[:500])  # fmt: skip


def request_of(event: Any) -> QueryRequest | None:
    if isinstance(event, QueryRequest):
        return event
    request = getattr(event, "request", None)
    return request if isinstance(request, QueryRequest) else None
