"""The bridge: clients ask over a WebSocket (or the OpenAI-compatible HTTP API, or the chat page), the question
travels as Kafka events, answers stream back.

One aiohttp server on one port serves everything: WebSocket upgrades on any path, ``/healthz``, the chat page at
``/`` (:mod:`streams.bridge.chat_page`) and ``/v1/...`` (:mod:`streams.bridge.openai_api`). aiohttp rather than the
``websockets`` server because the OpenAI API needs POST and streamed (SSE) response bodies, which the
``websockets`` server's HTTP hook cannot answer; the WebSocket protocol itself is unchanged.

Each bridge instance owns a reply topic (``bridge_reply_topic``) that it creates at start, names in every request's
``reply_to``, and reads alone (all partitions assigned, no consumer group): N instances never see each other's
replies and need no coordination. Events are routed to connections by their Kafka key, the request id.

The reply topic doubles as the instance's journal. Before a request goes to the queries topic, a copy goes to the
reply topic, so the instance knows a request's tenant even when no answer event has arrived yet. At start the
instance reads its topic back from ``now - bridge_resume_window_s`` and rebuilds every recent request's events:
a client that was connected to the previous process sends ``resume`` and misses nothing.

Backpressure: the Kafka reader never waits for a socket. Each connection has a bounded send queue drained by its
own writer task; a client that lets it overflow is disconnected (close code 1013) and may reconnect and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from infra.kafka_admin import ensure_topics, topic_durability
from infra.kafka_security import client_options
from infra.settings import Settings
from processors.query.requests import request_problem
from schemas.codec import DecodeError, EventDecoder, encode
from schemas.events import (
    AnswerDone,
    AnswerError,
    AnswerEvent,
    CancelRequest,
    QueryRequest,
    ReplyTo,
    TokenDelta,
    new_id,
)
from schemas.topics import DAY_MS, Topic
from streams import metrics, telemetry
from streams.bridge import chat_page, openai_api
from streams.bridge import protocol as proto
from streams.bridge.auth import AmbiguousCredentials, Caller, KeyRing, authorization_header
from streams.bridge.quotas import QuotaExceeded, Quotas
from streams.configure import request_limits
from streams.kafka import topic_partitions

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# Bridge shutdown closes sockets with 1001 and waits this long for handlers before cancelling them.
_SHUTDOWN_GRACE_S = 5.0
_journal: EventDecoder[QueryRequest | AnswerEvent] = EventDecoder(QueryRequest | AnswerEvent)


def instance_id(settings: Settings) -> str:
    """This instance's name: configured, or hostname-port (stable across restarts of the same process slot)."""
    raw = settings.bridge_instance or f"{socket.gethostname()}-{settings.bridge_port}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:200]


CloseHook = Callable[[int, str], Awaitable[object]]


@dataclass(eq=False)
class _Client:
    """One connection (a WebSocket, or one OpenAI API request): its tenant, its unfinished requests, and its
    outgoing queue. ``close`` ends the connection with a WebSocket close code and reason."""

    tenant: str
    key: str
    queue: asyncio.Queue[proto.ServerMessage]
    close: CloseHook
    resumable: bool = True
    requests: dict[str, _Request] = field(default_factory=dict)
    by_client_id: dict[str | int, str] = field(default_factory=dict)
    overflowed: bool = False
    # When it last sent a message or had an answer in flight (the idle timeout counts from here).
    active_at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Request:
    """What the instance knows about one request: enough to resume it and to route its live events."""

    request_id: str
    touched: float
    tenant: str | None = None
    client_id: str | int | None = None
    deltas: list[TokenDelta] = field(default_factory=list)
    next_seq: int = 0
    terminal: AnswerDone | AnswerError | None = None
    subscriber: _Client | None = None
    asked_at: float | None = None  # set by this instance's ask until its first answer message (metrics)


class Bridge:
    """One bridge instance. ``await start()``, then ``await stop()`` (or ``run_bridge`` for the CLI)."""

    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or instance_id(settings)
        self.reply_topic = settings.bridge_reply_topic(self.instance)
        self.keys = KeyRing(settings.api_keys)
        self.limits = request_limits(settings)
        self.quotas = Quotas(settings)
        auth = client_options(settings)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=0, **auth)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            **auth,
        )
        self._requests: dict[str, _Request] = {}
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        """Accepting sockets (its reply topic replayed), reading its replies, not shutting down: the readiness
        probe's answer."""
        return self._runner is not None and self.problem() is None

    @property
    def port(self) -> int:
        """The bound port (useful when started with ``bridge_port=0``)."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        retention_ms = max(int(self.settings.bridge_resume_window_s * 1000) * 2, DAY_MS)
        topic = NewTopic(
            name=self.reply_topic,
            num_partitions=self.settings.topic_partitions,
            replication_factor=self.settings.replication_factor,
            topic_configs={
                **topic_durability(self.settings),
                "cleanup.policy": "delete",
                "retention.ms": str(retention_ms),
            },
        )
        await ensure_topics(self.settings, extra=[topic])
        await self._producer.start()
        await self._consumer.start()
        await self._replay()
        self._reader = self._spawn(self._read())
        self._spawn(self._housekeep())
        runner = web.AppRunner(
            self.web_app(),
            access_log=None,  # not a line per health check or API call
            handler_cancellation=True,  # a client that goes away cancels its handler: its requests get cancelled
            shutdown_timeout=_SHUTDOWN_GRACE_S,
        )
        await runner.setup()
        await web.TCPSite(runner, self.settings.host, self.settings.bridge_port).start()
        self._runner = runner
        log.info(
            "bridge %s serving http://%s:%s (WebSocket, chat page, /v1 API), replies on %s",
            self.instance,
            self.settings.host,
            self.port,
            self.reply_topic,
        )

    def web_app(self) -> web.Application:
        """Every route on the one port: health, the chat page, the OpenAI-compatible API, and WebSockets anywhere
        else (the README's ``ws://host:port`` has path ``/``, which the page shares: an upgrade header decides)."""
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get(HEALTH_PATH, self._health)
        openai_api.add_routes(app, self)
        chat_page.add_routes(app)
        app.router.add_get("/{path:.*}", self._websocket_or_page)
        return app

    async def stop(self) -> None:
        """Stop accepting, close every WebSocket with 1001 (going away) without cancelling its requests (the client
        resumes on the next instance), end every API request with a retryable error and cancel it, then Kafka."""
        if self._stopping:
            return
        self._stopping = True
        closing = [client.close(WSCloseCode.GOING_AWAY, "bridge restarting") for client in list(self._clients)]
        await asyncio.gather(*closing, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        # Accepted requests and the cancels of clients that cannot resume still reach Kafka.
        await asyncio.gather(*self._sending, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()
        await self.quotas.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def problem(self) -> str | None:
        """Why this instance cannot serve answers (its reply reader stopped), or None: what ``/healthz`` reports,
        so an orchestrator restarts a bridge that still accepts sockets but can no longer answer them."""
        if self._stopping:
            return "stopping"
        if self._reader is None:
            return "starting"
        if self._reader.done():
            failure = None if self._reader.cancelled() else self._reader.exception()
            return f"reply reader stopped: {failure!r}" if failure else "reply reader stopped"
        return None

    async def _health(self, _request: web.Request) -> web.Response:
        problem = self.problem()
        if problem is not None:
            return web.Response(status=503, text=f"unhealthy: {problem}\n")
        return web.Response(text="ok\n")

    async def _replay(self) -> None:
        """Assign the whole reply topic and read back the resume window before serving, so resumes find it."""
        # A topic created a moment ago may have no metadata or leaders yet.
        assigned = await topic_partitions(self._consumer, self.reply_topic)
        self._consumer.assign(assigned)
        # Requests are journalled before their answers, so reach back one request timeout further.
        since_ms = int((time.time() - self.settings.bridge_resume_window_s - self.settings.request_timeout_s) * 1000)
        starts = await self._consumer.offsets_for_times(dict.fromkeys(assigned, since_ms))
        ends = await self._consumer.end_offsets(assigned)
        for tp in assigned:
            found = starts.get(tp)
            self._consumer.seek(tp, found.offset if found is not None else ends[tp])
        replayed = 0
        while [tp for tp in assigned if await self._consumer.position(tp) < ends[tp]]:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self._ingest(record.key, record.value)
                    replayed += 1
        log.info("bridge %s replayed %d events of %d requests", self.instance, replayed, len(self._requests))

    # -- Kafka -> sockets ---------------------------------------------------------------------------------------
    async def _read(self) -> None:
        """Follow the reply topic for the life of the instance. A broker error is waited out (the consumer
        reconnects by itself); a record that cannot be handled is skipped, never fatal."""
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("reading %s failed (%s); retrying", self.reply_topic, exc)
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    self._ingest(record.key, record.value)

    def _ingest(self, key: bytes | None, value: bytes | None) -> None:
        """Record one reply-topic event and forward it to its subscriber. Never awaits: routing order is Kafka's.
        Anyone who may produce to the topic can write anything to it, so any failure is that record's problem."""
        if key is None or value is None:
            return
        try:
            event = _journal.decode(value)
        except (DecodeError, RecursionError, ValueError, TypeError) as exc:
            log.warning("undecodable event on %s (%d bytes): %.200s", self.reply_topic, len(value), exc)
            return
        try:
            self._apply(key.decode(errors="replace")[:256], event)
        except Exception:
            log.exception("event on %s could not be routed; skipped", self.reply_topic)

    def _apply(self, request_id: str, event: QueryRequest | AnswerEvent) -> None:
        entry = self._requests.get(request_id)
        if entry is None:
            entry = self._requests[request_id] = _Request(request_id, time.monotonic())
        entry.touched = time.monotonic()
        if isinstance(event, QueryRequest):
            entry.tenant = event.tenant
            return
        if entry.terminal is not None:
            return  # a redelivery after the end
        if isinstance(event, TokenDelta):
            if event.seq < entry.next_seq:
                return  # at-least-once delivery: already seen
            if entry.asked_at is not None:
                metrics.bridge_first_token.record(time.monotonic() - entry.asked_at)
                entry.asked_at = None
            entry.deltas.append(event)
            entry.next_seq = event.seq + 1
        else:
            entry.terminal = event
        client = entry.subscriber
        if client is not None:
            for message in proto.to_client(event):
                self._push(client, message)
            if entry.terminal is not None:
                self._detach(entry)

    def _detach(self, entry: _Request) -> None:
        client = entry.subscriber
        if client is not None:
            client.requests.pop(entry.request_id, None)
            if entry.client_id is not None and client.by_client_id.get(entry.client_id) == entry.request_id:
                del client.by_client_id[entry.client_id]
            entry.subscriber = None

    def _push(self, client: _Client, message: proto.ServerMessage) -> None:
        """Queue without waiting; a full queue means the client is too slow, and only that client pays."""
        if client.overflowed:
            metrics.bridge_send_queue_drops.add(1)
            return
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            metrics.bridge_send_queue_drops.add(1)
            client.overflowed = True
            log.warning("client of tenant %s too slow (%d queued); closing", client.tenant, client.queue.qsize())
            self._spawn(
                _closing(client.close(WSCloseCode.TRY_AGAIN_LATER, "send queue overflow: reconnect and resume"))
            )

    async def _housekeep(self) -> None:
        """Time out requests nobody answers (a client never hears silence), forget ones past the window, close idle
        sockets, and renew this instance's connection leases in the quota store."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if now - renewed >= self.settings.bridge_quota_lease_s / 3:
                renewed = now
                self._spawn(self.quotas.renew())
            idle_limit = self.settings.bridge_idle_timeout_s
            for client in list(self._clients):
                if client.requests:
                    client.active_at = now
                elif idle_limit > 0 and client.resumable and now - client.active_at > idle_limit:
                    client.active_at = now  # one close is enough
                    self._spawn(_closing(client.close(WSCloseCode.OK, "idle: reconnect when you need the bridge")))
            for entry in list(self._requests.values()):
                idle = now - entry.touched
                if entry.terminal is None and entry.subscriber is not None and idle > self.settings.request_timeout_s:
                    message = f"no answer event for {self.settings.request_timeout_s:.0f}s"
                    error = AnswerError(
                        request_id=entry.request_id, code=proto.TIMEOUT, message=message, stage="bridge", retryable=True
                    )
                    self._apply(entry.request_id, error)
                    metrics.bridge_timeouts.add(1)
                    await self._cancel(entry.request_id, "timeout")
                elif entry.subscriber is None and idle > self.settings.bridge_resume_window_s:
                    del self._requests[entry.request_id]

    async def _cancel(self, request_id: str, reason: str) -> None:
        try:
            await self._producer.send_and_wait(
                self.settings.topic(Topic.CANCELLATIONS),
                encode(CancelRequest(request_id=request_id, reason=reason)),
                key=request_id.encode(),
            )
        except KafkaError:
            log.exception("could not send the cancellation of %s", request_id)

    # -- connections -> Kafka ----------------------------------------------------------------------------------
    def caller_for(self, authorization: str, url: str) -> Caller | None:
        return self.keys.caller_for(authorization, url)

    def has_room(self) -> bool:
        """Below ``bridge_max_connections`` open WebSockets and API requests together."""
        return len(self._clients) < self.settings.bridge_max_connections

    @contextlib.asynccontextmanager
    async def connection(
        self, caller: Caller, close: CloseHook, queue: asyncio.Queue[proto.ServerMessage], *, resumable: bool = True
    ) -> AsyncIterator[_Client]:
        """Register a connection for its lifetime, in a slot of its key's and tenant's quota (raises
        :class:`QuotaExceeded` before anything else when there is none). On exit its unfinished requests are
        cancelled ("disconnect"), except, for a ``resumable`` client, at a bridge shutdown or after a send-queue
        overflow: those clients come back and resume."""
        slot = new_id()
        refusal = await self.quotas.open(slot, caller.key, caller.tenant)
        if refusal is not None:
            raise QuotaExceeded(refusal)
        client = _Client(caller.tenant, caller.key, queue, close, resumable=resumable)
        self._clients.add(client)
        metrics.bridge_connections.add(1)
        try:
            yield client
        finally:
            self._clients.discard(client)
            metrics.bridge_connections.add(-1)
            self._send_later(self.quotas.close(slot))
            orphans = list(client.requests.values())
            for entry in orphans:
                self._detach(entry)
            if not resumable or (not self._stopping and not client.overflowed):
                for entry in orphans:  # a task: this may run in a handler that is being cancelled
                    self._send_later(self._cancel(entry.request_id, "disconnect"))

    async def answer(self, caller: Caller, ask: proto.Ask) -> AsyncGenerator[proto.ServerMessage, None]:
        """One request for a one-shot client (the OpenAI API): ``accepted``, then the answer's messages up to its
        ``done`` or ``error``. Closing the iterator early (the client went away) cancels the request."""
        # Unbounded: it holds one answer's messages, and a slow HTTP reader only delays its own answer.
        queue: asyncio.Queue[proto.ServerMessage] = asyncio.Queue()

        async def close(_code: int, reason: str) -> None:
            queue.put_nowait(proto.Error(code=proto.UNAVAILABLE, message=reason, retryable=True))

        async with self.connection(caller, close, queue, resumable=False) as client:
            await self.ask(client, ask)
            while True:
                message = await queue.get()
                yield message
                if isinstance(message, proto.Done | proto.Error):
                    return

    async def _websocket_or_page(self, request: web.Request) -> web.StreamResponse:
        """A WebSocket upgrade on any path; a plain GET of ``/`` is the chat page. Authentication and the connection
        limit are checked before the upgrade, so a refused client gets an HTTP status, not a closed socket."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if request.match_info["path"] == "":
                return await chat_page.index(request)
            raise web.HTTPNotFound()
        try:
            caller = self.caller_for(authorization_header(request.headers), str(request.rel_url))
        except AmbiguousCredentials as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if caller is None:
            raise web.HTTPUnauthorized(text="missing or invalid API key\n", headers={"WWW-Authenticate": "Bearer"})
        if not self.has_room():
            raise web.HTTPServiceUnavailable(text="too many connections\n")
        ws = web.WebSocketResponse(timeout=5.0, max_msg_size=1 << 20, heartbeat=20.0)

        async def close(code: int, reason: str) -> None:
            # Bounded: a client that stopped reading cannot hold a shutdown; the transport is dropped instead.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=code, message=reason.encode()), 10.0)

        try:
            async with self.connection(caller, close, asyncio.Queue(self.settings.bridge_send_queue)) as client:
                await ws.prepare(request)
                writer = asyncio.create_task(self._write(client, ws))
                try:
                    async for frame in ws:
                        if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                            client.active_at = time.monotonic()
                            await self._on_message(client, frame.data)
                finally:
                    writer.cancel()
        except QuotaExceeded as exc:
            retry = str(max(1, round(exc.refusal.retry_after_s)))
            raise web.HTTPTooManyRequests(text=f"{exc.refusal.message}\n", headers={"Retry-After": retry}) from None
        return ws

    async def _write(self, client: _Client, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # the socket closed: the handler cleans up
            while True:
                await ws.send_str(proto.encode_server(await client.queue.get()))

    async def _on_message(self, client: _Client, frame: str | bytes) -> None:
        try:
            message = proto.decode_client(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._push(client, proto.Error(code=proto.BAD_REQUEST, message=str(exc)[:500]))
            return
        except RecursionError:  # nesting deeper than the parser goes, in any field, known or not
            self._push(client, proto.Error(code=proto.BAD_REQUEST, message="message is nested too deeply"))
            return
        if isinstance(message, proto.Ask):
            await self.ask(client, message)
        elif isinstance(message, proto.Cancel):
            await self._on_cancel(client, message)
        else:
            self._resume(client, message)

    def _room_for(self, client: _Client, ident: proto.ClientId, request_id: str | None = None) -> bool:
        if len(client.requests) < self.settings.bridge_max_requests_per_connection:
            return True
        limit = self.settings.bridge_max_requests_per_connection
        self._push(
            client,
            proto.Error(
                code=proto.TOO_MANY_REQUESTS,
                message=f"at most {limit} requests at a time per connection",
                retryable=True,
                request_id=request_id,
                id=ident,
            ),
        )
        return False

    async def ask(self, client: _Client, ask: proto.Ask) -> None:
        """Journal the question, put it on the queries topic, and subscribe ``client`` to its answer: ``accepted``
        first, then the answer's messages (or one ``error``) on the client's queue."""
        if not ask.question.strip():
            self._push(client, proto.Error(code=proto.BAD_REQUEST, message="empty question", id=ask.id))
            return
        if not self._room_for(client, ask.id):
            return
        request = QueryRequest(
            request_id=new_id(),
            tenant=client.tenant,
            question=ask.question,
            reply_to=ReplyTo(topic=self.reply_topic),
            session_id=ask.session_id,
            options=ask.options,
            deadline=time.time() + self.settings.request_timeout_s,
        )
        problem = request_problem(request, self.limits)  # the worker checks again: any producer can send requests
        if problem is not None:
            self._push(client, proto.Error(code=proto.BAD_REQUEST, message=problem, id=ask.id))
            return
        refusal = await self.quotas.take_request(client.key, client.tenant)
        if refusal is not None:
            self._push(
                client,
                proto.Error(
                    code=proto.TOO_MANY_REQUESTS,
                    message=refusal.message,
                    retryable=True,
                    retry_after_s=refusal.retry_after_s,
                    id=ask.id,
                ),
            )
            return
        request_id = request.request_id
        entry = self._requests[request_id] = _Request(request_id, time.monotonic(), client.tenant, ask.id)
        entry.asked_at = entry.touched
        entry.subscriber = client
        client.requests[request_id] = entry
        if ask.id is not None:
            client.by_client_id[ask.id] = request_id
        self._push(client, proto.Accepted(id=ask.id, request_id=request_id))
        key = request_id.encode()
        value = encode(request)
        # Each question is a new trace: its context rides in the Kafka headers through every stage of the worker.
        with telemetry.tracer.start_as_current_span("bridge ask", context=Context(), kind=SpanKind.PRODUCER) as span:
            span.set_attributes({"ragstream.request_id": request_id, "ragstream.tenant": client.tenant,
                                 "messaging.system": "kafka",
                                 "messaging.destination.name": self.settings.topic(Topic.QUERIES)})  # fmt: skip
            metrics.bridge_asks.add(1)
            headers = [*telemetry.headers_from_context().items(), ("ragstream-kind", b"query.request")]
            try:
                # Shielded: a client that leaves right after ``accepted`` cancels its handler, but an accepted request
                # is sent whole (journal and query), so its cancel and its resume find it.
                await asyncio.shield(self._send_later(self._publish(key, value, headers)))
            except KafkaError as exc:
                log.warning("could not send request %s: %s", request_id, exc)
                self._detach(entry)
                self._push(
                    client,
                    proto.Error(
                        code=proto.UNAVAILABLE,
                        message="could not queue the request",
                        retryable=True,
                        request_id=request_id,
                        id=ask.id,
                    ),
                )

    async def _publish(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """The journal copy and the request, in one batch; the journal makes the request resumable."""
        sent = [
            await self._producer.send(self.reply_topic, value, key=key, headers=headers),
            await self._producer.send(self.settings.topic(Topic.QUERIES), value, key=key, headers=headers),
        ]
        await asyncio.gather(*sent)

    def _send_later(self, send: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a Kafka send that must happen even if its handler is cancelled; ``stop`` waits for it."""
        task = asyncio.create_task(send)
        self._sending.add(task)
        task.add_done_callback(self._sent)
        return task

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:  # reported to the client if it still waited
            log.debug("send failed: %s", task.exception())

    async def _on_cancel(self, client: _Client, cancel: proto.Cancel) -> None:
        request_id = cancel.request_id
        if request_id is None and cancel.id is not None:
            request_id = client.by_client_id.get(cancel.id, cancel.id if isinstance(cancel.id, str) else None)
        entry = self._requests.get(request_id) if request_id is not None else None
        if request_id is None or entry is None or entry.tenant != client.tenant:
            self._push(
                client,
                proto.Error(code=proto.UNKNOWN_REQUEST, message="no such request", id=cancel.id, request_id=request_id),
            )
            return
        # Sent even if the answer just ended (harmless, and the client cannot know). The worker ends a running answer
        # with a done (finish_reason "cancelled"), which reaches the client as usual.
        await self._cancel(request_id, "client")

    def _resume(self, client: _Client, resume: proto.Resume) -> None:
        """Replay what the client missed, then attach it to the live rest. Synchronous, so nothing slips between."""
        request_id = resume.request_id or resume.id
        entry = self._requests.get(request_id) if request_id else None
        if request_id is None or entry is None or entry.tenant != client.tenant:
            self._push(
                client,
                proto.Error(
                    code=proto.UNKNOWN_REQUEST,
                    message="unknown request, or older than the resume window",
                    request_id=request_id,
                ),
            )
            return
        if entry.terminal is None and entry.subscriber is not client and not self._room_for(client, None, request_id):
            return
        previous = entry.subscriber
        if previous is not None and previous is not client:  # a newer connection takes over from a stale one
            self._push(
                previous,
                proto.Error(
                    code=proto.RESUMED_ELSEWHERE,
                    message="another connection resumed this request; its answer goes there now",
                    request_id=request_id,
                    id=entry.client_id,
                ),
            )
        self._detach(entry)
        for delta in entry.deltas:
            if delta.seq > resume.after_seq:
                self._push(client, proto.Token(request_id=request_id, seq=delta.seq, text=delta.text))
        if entry.terminal is not None:
            for message in proto.to_client(entry.terminal):
                self._push(client, message)
        else:
            entry.subscriber = client
            client.requests[request_id] = entry


async def _closing(close: Awaitable[object]) -> None:
    await close


async def serve_until_signalled(settings: Settings, stop_signals: Iterable[signal.Signals] = ()) -> None:
    """Run one bridge until SIGTERM/SIGINT, then shut down gracefully."""
    bridge = Bridge(settings)
    endpoints = telemetry.serve_endpoints(settings.host, settings.bridge_metrics_port, lambda: bridge.serving)
    metrics.start_counting_bridge()
    await bridge.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        log.info("bridge %s shutting down", bridge.instance)
        await bridge.stop()
        if endpoints is not None:
            endpoints.stop()


def run_bridge(settings: Settings) -> None:
    """``ragstream bridge``: serve on ``settings.host:bridge_port`` until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    telemetry.configure(settings, "ragstream-bridge")
    try:
        asyncio.run(serve_until_signalled(settings, (signal.SIGTERM, signal.SIGINT)))
    finally:
        telemetry.shutdown()
