"""The WebSocket bridge: clients ask over a WebSocket, the question travels as Kafka events, answers stream back.

Each bridge instance owns a reply topic (``bridge_reply_topic``) that it creates at start, names in every request's
``reply_to``, and reads alone (all partitions assigned, no consumer group): N instances never see each other's
replies and need no coordination. Events are routed to sockets by their Kafka key, the request id.

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
import hmac
import logging
import re
import signal
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from infra.kafka_admin import ensure_topics
from infra.settings import Settings
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
from streams.bridge import protocol as proto
from streams.kafka import topic_partitions

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
_journal: EventDecoder[QueryRequest | AnswerEvent] = EventDecoder(QueryRequest | AnswerEvent)


def instance_id(settings: Settings) -> str:
    """This instance's name: configured, or hostname-port (stable across restarts of the same process slot)."""
    raw = settings.bridge_instance or f"{socket.gethostname()}-{settings.bridge_port}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:200]


def parse_api_keys(spec: str) -> dict[str, str]:
    """``key:tenant,key:tenant`` -> {key: tenant}; a malformed pair fails start-up rather than locking users out."""
    keys: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, tenant = pair.partition(":")
        if not sep or not key or not tenant:
            raise ValueError(f"api_keys: expected key:tenant, got {pair.split(':')[0][:4]}...")
        keys[key] = tenant
    return keys


def request_api_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>``, else from ``?api_key=`` (browsers cannot set headers)."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(urlsplit(request.path).query).get("api_key")
    return values[0] if values else None


@dataclass(eq=False)
class _Client:
    """One WebSocket connection: its tenant, its unfinished requests, and its bounded outgoing queue."""

    ws: ServerConnection
    tenant: str
    queue: asyncio.Queue[str]
    requests: dict[str, _Request] = field(default_factory=dict)
    by_client_id: dict[str | int, str] = field(default_factory=dict)
    overflowed: bool = False


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
        self.api_keys = parse_api_keys(settings.api_keys)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=0)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        self._requests: dict[str, _Request] = {}
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._stopping = False

    @property
    def serving(self) -> bool:
        """Accepting sockets (its reply topic replayed) and not shutting down: the readiness probe's answer."""
        return self._server is not None and not self._stopping

    @property
    def port(self) -> int:
        """The bound port (useful when started with ``bridge_port=0``)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        retention_ms = max(int(self.settings.bridge_resume_window_s * 1000) * 2, DAY_MS)
        topic = NewTopic(
            name=self.reply_topic,
            num_partitions=self.settings.topic_partitions,
            replication_factor=1,
            topic_configs={"cleanup.policy": "delete", "retention.ms": str(retention_ms)},
        )
        await ensure_topics(self.settings, extra=[topic])
        await self._producer.start()
        await self._consumer.start()
        await self._replay()
        self._spawn(self._read())
        self._spawn(self._housekeep())
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.bridge_port,
            process_request=self._process_request,
            close_timeout=5,
            max_size=1 << 20,
        )
        log.info(
            "bridge %s serving ws://%s:%s, replies on %s",
            self.instance,
            self.settings.host,
            self.port,
            self.reply_topic,
        )

    async def stop(self) -> None:
        """Stop accepting, close every socket with 1001 (going away) without cancelling their requests, then Kafka."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="bridge restarting")
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    self._ingest(record.key, record.value)

    def _ingest(self, key: bytes | None, value: bytes | None) -> None:
        """Record one reply-topic event and forward it to its subscriber. Never awaits: routing order is Kafka's."""
        if key is None or value is None:
            return
        try:
            event = _journal.decode(value)
        except DecodeError as exc:
            log.warning("undecodable event on %s: %s", self.reply_topic, exc)
            return
        self._apply(key.decode(errors="replace"), event)

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
            client.queue.put_nowait(proto.encode_server(message))
        except asyncio.QueueFull:
            metrics.bridge_send_queue_drops.add(1)
            client.overflowed = True
            log.warning("client of tenant %s too slow (%d queued); closing", client.tenant, client.queue.qsize())
            self._spawn(client.ws.close(CloseCode.TRY_AGAIN_LATER, "send queue overflow: reconnect and resume"))

    async def _housekeep(self) -> None:
        """Time out requests nobody answers (a client never hears silence) and forget ones past the window."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
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

    # -- sockets -> Kafka ---------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Health checks, then authentication and the connection limit, all before the upgrade."""
        if urlsplit(request.path).path == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "ok\n")
        if self._tenant(request) is None:
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or invalid API key\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if len(self._clients) >= self.settings.bridge_max_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def _tenant(self, request: Request) -> str | None:
        offered = request_api_key(request)
        if offered is None:
            return None
        tenant = None
        for key, owner in self.api_keys.items():  # constant-time per key: no timing hints about valid keys
            if hmac.compare_digest(key.encode(), offered.encode()):
                tenant = owner
        return tenant

    async def _handle(self, ws: ServerConnection) -> None:
        tenant = self._tenant(ws.request) if ws.request is not None else None
        if tenant is None:  # process_request already refused; defensive
            await ws.close(CloseCode.POLICY_VIOLATION, "unauthorized")
            return
        client = _Client(ws, tenant, asyncio.Queue(self.settings.bridge_send_queue))
        self._clients.add(client)
        metrics.bridge_connections.add(1)
        writer = asyncio.create_task(self._write(client))
        try:
            async for frame in ws:
                await self._on_message(client, frame)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            metrics.bridge_connections.add(-1)
            writer.cancel()
            orphans = list(client.requests.values())
            for entry in orphans:
                self._detach(entry)
            # A client that left cancels its work; a bridge shutdown or a slow-client close does not (they resume).
            if not self._stopping and not client.overflowed:
                for entry in orphans:
                    await self._cancel(entry.request_id, "disconnect")

    async def _write(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await client.ws.send(await client.queue.get())

    async def _on_message(self, client: _Client, frame: str | bytes) -> None:
        try:
            message = proto.decode_client(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._push(client, proto.Error(code=proto.BAD_REQUEST, message=str(exc)))
            return
        if isinstance(message, proto.Ask):
            await self._ask(client, message)
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

    async def _ask(self, client: _Client, ask: proto.Ask) -> None:
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
                # The journal copy and the request go out in one batch; the journal makes the request resumable.
                sent = [
                    await self._producer.send(self.reply_topic, value, key=key, headers=headers),
                    await self._producer.send(self.settings.topic(Topic.QUERIES), value, key=key, headers=headers),
                ]
                await asyncio.gather(*sent)
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
        self._detach(entry)  # a newer connection takes over from a stale one
        for delta in entry.deltas:
            if delta.seq > resume.after_seq:
                self._push(client, proto.Token(request_id=request_id, seq=delta.seq, text=delta.text))
        if entry.terminal is not None:
            for message in proto.to_client(entry.terminal):
                self._push(client, message)
        else:
            entry.subscriber = client
            client.requests[request_id] = entry


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
    logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per health check
    telemetry.configure(settings, "ragstream-bridge")
    try:
        asyncio.run(serve_until_signalled(settings, (signal.SIGTERM, signal.SIGINT)))
    finally:
        telemetry.shutdown()
