"""The WebSocket bridge's client protocol: JSON messages tagged by ``type``, and how Kafka events map onto them.

Kept apart from the server so the mapping is testable without sockets or Kafka, and so the README's protocol
section has one place to point at. Every message is a msgspec Struct: decoding validates the client's input and
the error message says which field was wrong.
"""

from __future__ import annotations

import msgspec

from schemas.events import AnswerDone, AnswerError, AnswerEvent, QueryOptions, TokenDelta

ClientId = str | int | None

# --- client -> server -------------------------------------------------------------------------------------------


class Ask(msgspec.Struct, kw_only=True, tag_field="type", tag="ask"):
    """Ask a question; ``id`` is the client's own correlation id, echoed in ``accepted``."""

    question: str
    id: ClientId = None
    options: QueryOptions = msgspec.field(default_factory=QueryOptions)
    session_id: str = ""


class Cancel(msgspec.Struct, kw_only=True, tag_field="type", tag="cancel"):
    """Stop a request: ``id`` is the client id given in ``ask`` or the server's request id."""

    id: ClientId = None
    request_id: str | None = None


class Resume(msgspec.Struct, kw_only=True, tag_field="type", tag="resume"):
    """Re-attach to a request after a reconnect; tokens with ``seq > after_seq`` are sent again."""

    id: str | None = None
    request_id: str | None = None
    after_seq: int = -1


ClientMessage = Ask | Cancel | Resume

# --- server -> client -------------------------------------------------------------------------------------------


class Accepted(msgspec.Struct, kw_only=True, tag_field="type", tag="accepted"):
    id: ClientId
    request_id: str


class Token(msgspec.Struct, kw_only=True, tag_field="type", tag="token"):
    request_id: str
    seq: int
    text: str


class CitationMessage(msgspec.Struct, kw_only=True, tag_field="type", tag="citation"):
    request_id: str
    number: int
    source_uri: str
    title: str
    doc_id: str
    chunk_id: str
    heading_path: list[str]


class UsageMessage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int


class PromptMessage(msgspec.Struct, kw_only=True):
    name: str
    version: str
    content_hash: str


class Done(msgspec.Struct, kw_only=True, tag_field="type", tag="done"):
    request_id: str
    text: str
    finish_reason: str
    model: str
    cached: bool
    timings_ms: dict[str, float]
    usage: UsageMessage
    prompt: PromptMessage | None
    deltas: int


class Error(msgspec.Struct, kw_only=True, tag_field="type", tag="error"):
    """``request_id`` is null when the error is about a message, not a request; ``id`` echoes the ask's id."""

    code: str
    message: str
    retryable: bool = False
    request_id: str | None = None
    id: ClientId = None
    stage: str = ""
    # For ``too_many_requests``: seconds until a retry can be accepted.
    retry_after_s: float | None = None


ServerMessage = Accepted | Token | CitationMessage | Done | Error

# Error codes the bridge itself sends (workers add their own, e.g. ``stage_failed``).
BAD_REQUEST = "bad_request"
TOO_MANY_REQUESTS = "too_many_requests"
UNKNOWN_REQUEST = "unknown_request"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"
# To a connection whose request another connection resumed: the answer continues there, not here.
RESUMED_ELSEWHERE = "resumed_elsewhere"

_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()


def decode_client(data: str | bytes) -> ClientMessage:
    """Parse one client frame; raises ``msgspec.ValidationError``/``DecodeError`` with a readable reason."""
    return _decoder.decode(data)


def encode_server(message: ServerMessage) -> str:
    """JSON text frame for one server message (text, so browsers get strings)."""
    return _encoder.encode(message).decode()


def to_client(event: AnswerEvent) -> list[ServerMessage]:
    """One Kafka answer event as the messages a client sees: a done becomes its citations, then ``done``."""
    if isinstance(event, TokenDelta):
        return [Token(request_id=event.request_id, seq=event.seq, text=event.text)]
    if isinstance(event, AnswerError):
        return [
            Error(
                request_id=event.request_id,
                code=event.code,
                message=event.message,
                retryable=event.retryable,
                stage=event.stage,
            )
        ]
    return [*citations(event), done(event)]


def citations(event: AnswerDone) -> list[ServerMessage]:
    return [
        CitationMessage(
            request_id=event.request_id,
            number=c.number,
            source_uri=c.source_uri,
            title=c.title,
            doc_id=c.doc_id,
            chunk_id=c.chunk_id,
            heading_path=list(c.heading_path),
        )
        for c in event.citations
    ]


def done(event: AnswerDone) -> Done:
    ref = event.prompt_ref
    return Done(
        request_id=event.request_id,
        text=event.text,
        finish_reason=event.finish_reason,
        model=event.model,
        cached=event.cached,
        timings_ms=dict(event.timings_ms),
        usage=UsageMessage(prompt_tokens=event.usage.prompt_tokens, completion_tokens=event.usage.completion_tokens),
        prompt=PromptMessage(name=ref.name, version=ref.version, content_hash=ref.content_hash) if ref else None,
        deltas=event.deltas,
    )
