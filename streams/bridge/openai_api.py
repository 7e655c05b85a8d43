"""An OpenAI-compatible chat completions API on the bridge: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client asks ragstream without learning its WebSocket protocol. A completion is an ordinary bridge request
(journalled, sent to the queries topic, answered through the guard, cache, retrieval, generation and output guard,
resumable inside the bridge), so nothing about the pipeline differs from a WebSocket ``ask``:

* the API key is the bearer token and maps to a tenant exactly like the WebSocket's;
* the question is the last ``user`` message; earlier turns and ``system`` messages do not reach the model (the
  pipeline builds its own prompt from the retrieved sources);
* ``model`` ``"ragstream"`` lets the router choose; any other name asks for that model (as ``options.model``);
* ``stream: true`` answers with server-sent ``chat.completion.chunk`` events and ``data: [DONE]``; the response
  starts only when the first answer event arrives, so a blocked or failed request gets an HTTP error status;
* citations, the cache flag and ragstream's own finish reason travel in the extension field ``ragstream`` of the
  completion (and of the last chunk); see :func:`extension`;
* errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; a failure after the stream
  started arrives as one ``data: {"error": ...}`` event, which OpenAI's clients raise as an error;
* a client that disconnects cancels its request (the handler is cancelled, the bridge sends ``query.cancel``).

Request extension: ``"ragstream": {"use_cache": false, "prompt_version": "...", "session_id": "...", "rerank": false}``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import msgspec
from aiohttp import web

from infra.settings import Settings
from schemas.events import QueryOptions
from streams.bridge import protocol as proto
from streams.bridge.auth import AmbiguousCredentials, Caller, authorization_header
from streams.bridge.quotas import QuotaExceeded

MODEL_AUTO = "ragstream"  # the model name that lets the router choose
COMPLETIONS_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


class AnswerSource(Protocol):
    """What the API needs of the bridge (:class:`streams.bridge.server.Bridge`)."""

    settings: Settings

    def caller_for(self, authorization: str, url: str) -> Caller | None: ...

    def has_room(self) -> bool: ...

    def answer(self, caller: Caller, ask: proto.Ask) -> AsyncGenerator[proto.ServerMessage, None]: ...


# --- request ---------------------------------------------------------------------------------------------------


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str = ""


class MessageIn(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class RagstreamOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The request's extension field: what a WebSocket ``ask`` can say that OpenAI's schema cannot."""

    use_cache: bool = True
    prompt_version: str | None = None
    session_id: str = ""
    rerank: bool | None = None


class CompletionRequest(msgspec.Struct, kw_only=True):
    """The fields ragstream uses; others that OpenAI clients send (``seed``, ``tools``, ...) are ignored."""

    model: str
    messages: list[MessageIn]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    ragstream: RagstreamOptions = msgspec.field(default_factory=RagstreamOptions)


_request_decoder = msgspec.json.Decoder(CompletionRequest)
_json = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, *, kind: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return web.Response(
            status=self.status, body=_json.encode(self.body), content_type="application/json", headers=headers
        )


# Bridge and pipeline error codes -> (HTTP status, OpenAI error type). Unknown codes are server errors.
_ERRORS: dict[str, tuple[int, str]] = {
    proto.BAD_REQUEST: (400, "invalid_request_error"),
    "blocked": (400, "invalid_request_error"),
    proto.UNKNOWN_REQUEST: (404, "invalid_request_error"),
    proto.TOO_MANY_REQUESTS: (429, "rate_limit_error"),
    proto.UNAVAILABLE: (503, "server_error"),
    proto.TIMEOUT: (504, "server_error"),
}


def api_error(error: proto.Error) -> ApiError:
    """A bridge or pipeline error as an OpenAI error; a question blocked by the input guard is ``content_filter``."""
    status, kind = _ERRORS.get(error.code, (500, "server_error"))
    if error.code == "blocked":
        return ApiError(status, error.message, kind=kind, code="content_filter", param="messages")
    return ApiError(status, error.message, kind=kind, code=error.code)


def question_of(body: CompletionRequest) -> str:
    """The last user message's text (string content, or the text parts of a content list)."""
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        content = message.content
        text = content if isinstance(content, str) else "".join(p.text for p in content or () if p.type == "text")
        if text.strip():
            return text
        break
    raise ApiError(
        400,
        "messages must end with a user message that has text",
        kind="invalid_request_error",
        code="invalid_value",
        param="messages",
    )


def parse_request(raw: bytes) -> CompletionRequest:
    try:
        body = _request_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(
            400, f"invalid request body: {exc}", kind="invalid_request_error", code="invalid_value"
        ) from None
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", kind="invalid_request_error", code="invalid_value", param="n")
    return body


def ask_of(body: CompletionRequest) -> proto.Ask:
    """The WebSocket ``ask`` this completion request amounts to."""
    options = QueryOptions(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        model=None if body.model in ("", MODEL_AUTO) else body.model,
        prompt_version=body.ragstream.prompt_version,
        use_cache=body.ragstream.use_cache,
        rerank=body.ragstream.rerank,
    )
    return proto.Ask(question=question_of(body), options=options, session_id=body.ragstream.session_id)


# --- response --------------------------------------------------------------------------------------------------

# ragstream's finish reasons -> OpenAI's. A refusal is a complete answer (the refusal sentence); an answer the
# output guard stopped is "content_filter"; a cancelled one stopped. The original is in the extension field.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "cancelled": "stop",
    "refused": "stop",
    "blocked": "content_filter",
}


def citation(message: proto.CitationMessage) -> dict[str, Any]:
    return {
        "number": message.number,
        "title": message.title,
        "source_uri": message.source_uri,
        "heading_path": message.heading_path,
        "doc_id": message.doc_id,
        "chunk_id": message.chunk_id,
    }


def extension(request_id: str, done: proto.Done, citations: list[proto.CitationMessage]) -> dict[str, Any]:
    """The ``ragstream`` field of a completion: ``citations`` (one per ``[n]`` in the text: ``number``, ``title``,
    ``source_uri``, ``heading_path``, ``doc_id``, ``chunk_id``), ``cached``, ``finish_reason`` (ragstream's own:
    ``stop``, ``length``, ``cancelled``, ``refused``, ``blocked``), ``model`` (the one that answered),
    ``request_id``, ``prompt`` and ``timings_ms``."""
    return {
        "request_id": request_id,
        "citations": [citation(c) for c in citations],
        "cached": done.cached,
        "finish_reason": done.finish_reason,
        "model": done.model,
        "prompt": msgspec.to_builtins(done.prompt),
        "timings_ms": done.timings_ms,
    }


def usage(done: proto.Done) -> dict[str, int]:
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Completion:
    """One completion's identity and what the answer stream has said so far."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = int(time.time())
        self.request_id = ""
        self.text: list[str] = []
        self.citations: list[proto.CitationMessage] = []

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.request_id}"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            **extra,
        }
        return b"data: " + _json.encode(body) + b"\n\n"

    def whole(self, done: proto.Done) -> dict[str, Any]:
        text = "".join(self.text) or done.text
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": FINISH_REASONS.get(done.finish_reason, "stop"),
                    "logprobs": None,
                }
            ],
            "usage": usage(done),
            "ragstream": extension(self.request_id, done, self.citations),
        }


async def _first_event(messages: AsyncIterator[proto.ServerMessage], completion: _Completion) -> proto.ServerMessage:
    """Skip ``accepted`` (noting the request id); raise the request's error before any response is started."""
    async for message in messages:
        if isinstance(message, proto.Accepted):
            completion.request_id = message.request_id
            continue
        if isinstance(message, proto.Error):
            raise api_error(message)
        return message
    raise ApiError(502, "the answer stream ended without an answer", kind="server_error")


def _authorized(source: AnswerSource, request: web.Request) -> Caller:
    try:
        caller = source.caller_for(authorization_header(request.headers), str(request.rel_url))
    except AmbiguousCredentials as exc:
        raise ApiError(400, str(exc), kind="invalid_request_error") from None
    if caller is None:
        raise ApiError(
            401,
            "missing or invalid API key (Authorization: Bearer <key>)",
            kind="invalid_request_error",
            code="invalid_api_key",
        )
    return caller


def add_routes(app: web.Application, source: AnswerSource) -> None:
    """Register ``/v1/models`` and ``/v1/chat/completions`` answered through ``source``."""

    async def models(request: web.Request) -> web.Response:
        try:
            _authorized(source, request)
        except ApiError as exc:
            return exc.response()
        s = source.settings
        names = dict.fromkeys((MODEL_AUTO, s.llm_small_model, s.llm_large_model, s.llm_model))
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "ragstream"} for name in names]
        return web.json_response({"object": "list", "data": data})

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            caller = _authorized(source, request)
            body = parse_request(await request.read())
            ask = ask_of(body)
            if not source.has_room():
                raise ApiError(503, "too many connections", kind="server_error", code=proto.UNAVAILABLE)
            messages = source.answer(caller, ask)
            try:
                completion = _Completion(body.model)
                first = await _first_event(messages, completion)
                if body.stream:
                    include_usage = body.stream_options is not None and body.stream_options.include_usage
                    response = web.StreamResponse(
                        headers={
                            "Content-Type": "text/event-stream",
                            "Cache-Control": "no-cache",
                            "X-Accel-Buffering": "no",
                        }
                    )
                    await response.prepare(request)
                    with contextlib.suppress(ConnectionError):  # the client left: closing ``messages`` cancels
                        await _stream(response, messages, completion, first, include_usage)
                    return response
                return await _collect(messages, completion, first)
            finally:
                await messages.aclose()  # early exit or a client that went away: the bridge cancels the request
        except QuotaExceeded as exc:
            return ApiError(429, exc.refusal.message, kind="rate_limit_error", code=proto.TOO_MANY_REQUESTS).response()
        except ApiError as exc:
            return exc.response()

    app.router.add_get(MODELS_PATH, models)
    app.router.add_post(COMPLETIONS_PATH, completions)


def _absorb(message: proto.ServerMessage, completion: _Completion) -> proto.Done | None:
    if isinstance(message, proto.Token):
        completion.text.append(message.text)
    elif isinstance(message, proto.CitationMessage):
        completion.citations.append(message)
    elif isinstance(message, proto.Done):
        return message
    elif isinstance(message, proto.Error):
        raise api_error(message)
    return None


async def _collect(
    messages: AsyncIterator[proto.ServerMessage], completion: _Completion, first: proto.ServerMessage
) -> web.Response:
    done = _absorb(first, completion)
    if done is None:
        async for message in messages:
            done = _absorb(message, completion)
            if done is not None:
                break
    if done is None:
        raise ApiError(502, "the answer stream ended without an answer", kind="server_error")
    return web.json_response(completion.whole(done), dumps=lambda value: _json.encode(value).decode())


async def _stream(
    response: web.StreamResponse,
    messages: AsyncIterator[proto.ServerMessage],
    completion: _Completion,
    first: proto.ServerMessage,
    include_usage: bool,
) -> None:
    """The answer as server-sent chunks: the role, each token, then the finish with the extension field."""
    await response.write(completion.chunk({"role": "assistant", "content": ""}))

    async def events() -> AsyncIterator[proto.ServerMessage]:
        yield first
        async for message in messages:
            yield message

    async for message in events():
        if isinstance(message, proto.Token):
            await response.write(completion.chunk({"content": message.text}))
        elif isinstance(message, proto.CitationMessage):
            completion.citations.append(message)
        elif isinstance(message, proto.Error):
            await response.write(b"data: " + _json.encode(api_error(message).body) + b"\n\n")
            break
        elif isinstance(message, proto.Done):
            finish = FINISH_REASONS.get(message.finish_reason, "stop")
            ragstream = extension(completion.request_id, message, completion.citations)
            await response.write(completion.chunk({}, finish, ragstream=ragstream))
            if include_usage:
                body = {**_chunk_head(completion), "choices": [], "usage": usage(message)}
                await response.write(b"data: " + _json.encode(body) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            break
    await response.write_eof()


def _chunk_head(completion: _Completion) -> dict[str, Any]:
    return {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
