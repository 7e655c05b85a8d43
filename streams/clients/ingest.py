"""``ragstream ingest``: walk files, send document events to Kafka, and wait for the index acknowledgements.

A file whose content hash equals its live version's hash (read from the document state in Redis) is skipped
without producing anything, so re-running on an unchanged tree does no work. Changed files get the next version
number, and the command returns only when every document it sent is acknowledged (indexed, unchanged, failed) by
the indexer, showing chunks indexed, docs/s and errors as the acks arrive.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import Settings
from processors.adapters.doc_states import DocStates, check_tenant
from processors.ingest.documents import doc_key, hash_bytes
from processors.ingest.loaders import content_type_for
from schemas.codec import DecodeError, EventDecoder, encode
from schemas.events import DocumentDelete, DocumentIndexed, DocumentUpsert
from schemas.topics import Topic
from streams.kafka import ProducerAndTail

_acks: EventDecoder[DocumentIndexed] = EventDecoder(DocumentIndexed)

# Producer requests may be large (a 2.5 MB HTML page); gzip keeps what the broker stores well under its limit.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
READ_BATCH = 128
_BINARY_TYPES = {"application/pdf"}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    doc_id: str
    content_type: str


@dataclass
class IngestReport:
    files: int = 0
    sent: int = 0
    skipped: int = 0  # unchanged by content hash, nothing sent
    indexed: int = 0
    unchanged: int = 0  # acknowledged as unchanged by the worker
    deleted: int = 0
    failed: int = 0
    timed_out: int = 0
    chunks: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        done = self.indexed + self.unchanged + self.deleted
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.timed_out == 0


def discover(paths: Sequence[str | Path], *, prefix: str = "") -> list[SourceFile]:
    """Supported files under ``paths``; a doc id is the path relative to the directory given (or the file name)."""
    found: dict[str, SourceFile] = {}
    for raw in paths:
        root = Path(raw).expanduser()
        if root.is_dir():
            candidates: Iterator[tuple[Path, str]] = (
                (p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*")) if p.is_file()
            )
        elif root.is_file():
            candidates = iter([(root, root.name)])
        else:
            raise FileNotFoundError(f"no such file or directory: {root}")
        for path, relative in candidates:
            content_type = content_type_for(path.name)
            if content_type is not None:
                doc_id = f"{prefix}{relative}"
                found[doc_id] = SourceFile(path.resolve(), doc_id, content_type)
    return list(found.values())


def make_event(source: SourceFile, data: bytes, tenant: str, version: int, *, reindex: bool = False) -> DocumentUpsert:
    """Text goes in ``content``; bytes that are not UTF-8 (or a PDF) go raw, for the worker's loader to judge."""
    text = ""
    raw = b""
    if source.content_type in _BINARY_TYPES:
        raw = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raw = data
    return DocumentUpsert(
        tenant=tenant,
        doc_id=source.doc_id,
        version=version,
        content=text,
        content_bytes=raw,
        content_type=source.content_type,
        source_uri=source.path.as_uri(),
        content_hash=hash_bytes(data),
        metadata={"path": source.doc_id, "bytes": len(data)},
        reindex=reindex,
    )


class DocumentChannel(ProducerAndTail):
    """A producer for document events and a reader of the ack topic from its current end. Async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.acks_topic = settings.topic(Topic.DOCUMENT_ACKS)
        super().__init__(
            settings.kafka_servers, self.acks_topic, fetch_max_wait_ms=20,
            linger_ms=5, compression_type="gzip", max_request_size=MAX_REQUEST_BYTES,
        )  # fmt: skip
        self.acks: asyncio.Queue[DocumentIndexed] = asyncio.Queue()

    async def on_record(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            await self.acks.put(_acks.decode(value))
        except DecodeError:
            return

    async def send(self, event: DocumentUpsert | DocumentDelete) -> asyncio.Future[Any]:
        """Queue the event (batched by the producer); the returned future resolves when Kafka has it."""
        key = doc_key(event.tenant, event.doc_id).encode()
        kind = ("document.delete" if isinstance(event, DocumentDelete) else "document.upsert").encode()
        future: asyncio.Future[Any] = await self._producer.send(
            self.settings.topic(Topic.DOCUMENTS), encode(event), key=key, headers=[("ragstream-kind", kind)]
        )
        return future


class _Progress:
    """A rich progress bar when attached to a terminal (or asked for), otherwise silent."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar: Any = None
        self.task: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks indexed"), TextColumn("{task.fields[rate]:.1f} docs/s"),
            TextColumn("[red]{task.fields[errors]} errors"), TimeElapsedColumn(),
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("indexing", total=total, chunks=0, rate=0.0, errors=0)

    def update(self, report: IngestReport, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, chunks=report.chunks, rate=report.docs_per_s,
                            errors=report.failed)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def ingest(
    settings: Settings,
    paths: Sequence[str | Path],
    tenant: str,
    *,
    prefix: str = "",
    force: bool = False,
    timeout_s: float = 600.0,
    progress: bool | None = None,
) -> IngestReport:
    """Send every changed file under ``paths`` and wait for its ack; see the module docstring."""
    import redis.asyncio as aioredis

    check_tenant(tenant)
    report = IngestReport()
    sources = discover(paths, prefix=prefix)
    report.files = len(sources)
    started = time.perf_counter()
    show = progress if progress is not None else os.isatty(2)
    bar = _Progress(show, len(sources))
    redis = aioredis.Redis.from_url(settings.redis_address)
    pending: dict[str, str] = {}  # event_id -> doc_id
    try:
        states = DocStates(redis, prefix=settings.topic_prefix)
        async with DocumentChannel(settings) as channel:
            deliveries: list[tuple[str, asyncio.Future[Any]]] = []
            for start in range(0, len(sources), READ_BATCH):
                batch = sources[start : start + READ_BATCH]
                contents = await asyncio.gather(*(asyncio.to_thread(s.path.read_bytes) for s in batch))
                doc_states = await states.get_many(tenant, [s.doc_id for s in batch])
                for source, data, state in zip(batch, contents, doc_states, strict=True):
                    if not force and state.live > 0 and state.hash == hash_bytes(data):
                        report.skipped += 1
                        continue
                    event = make_event(source, data, tenant, state.next_version, reindex=force)
                    pending[event.event_id] = source.doc_id
                    deliveries.append((event.event_id, await channel.send(event)))
                    report.sent += 1
                _drain(channel, pending, report)
                bar.update(report, _done(report), report.files)
            for event_id, delivery in deliveries:
                try:
                    await delivery
                except Exception as exc:  # e.g. larger than the broker accepts
                    doc_id = pending.pop(event_id, event_id)
                    report.failed += 1
                    report.errors.append((doc_id, f"not sent: {type(exc).__name__}: {exc}"))
            deadline = time.monotonic() + timeout_s
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    ack = await asyncio.wait_for(channel.acks.get(), min(remaining, 0.5))
                    _apply(ack, pending, report)
                except TimeoutError:
                    pass
                _drain(channel, pending, report)
                report.seconds = time.perf_counter() - started
                bar.update(report, _done(report), report.files)
    finally:
        await redis.aclose()
        bar.close()
    report.timed_out = len(pending)
    report.errors.extend((doc_id, f"no acknowledgement within {timeout_s:.0f}s") for doc_id in pending.values())
    report.seconds = time.perf_counter() - started
    return report


def _done(report: IngestReport) -> int:
    return report.skipped + report.indexed + report.unchanged + report.deleted + report.failed


def _drain(channel: DocumentChannel, pending: dict[str, str], report: IngestReport) -> None:
    while not channel.acks.empty():
        _apply(channel.acks.get_nowait(), pending, report)


def _apply(ack: DocumentIndexed, pending: dict[str, str], report: IngestReport) -> None:
    doc_id = pending.pop(ack.event_ref, None)
    if doc_id is None:
        return  # someone else's document, or a second failure ack of one already counted
    if ack.status == "indexed":
        report.indexed += 1
        report.chunks += ack.chunks
    elif ack.status == "unchanged":
        report.unchanged += 1
    elif ack.status == "deleted":
        report.deleted += 1
    else:
        report.failed += 1
        report.errors.append((doc_id, ack.error))


async def delete(settings: Settings, tenant: str, doc_ids: Sequence[str], *, timeout_s: float = 120.0) -> IngestReport:
    """Delete documents (every version) and wait until their chunks are gone."""
    check_tenant(tenant)
    report = IngestReport(files=len(doc_ids))
    started = time.perf_counter()
    pending: dict[str, str] = {}
    async with DocumentChannel(settings) as channel:
        for doc_id in doc_ids:
            event = DocumentDelete(tenant=tenant, doc_id=doc_id, reason="ragstream ingest --delete")
            pending[event.event_id] = doc_id
            await (await channel.send(event))
            report.sent += 1
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            try:
                _apply(await asyncio.wait_for(channel.acks.get(), 0.5), pending, report)
            except TimeoutError:
                continue
    report.timed_out = len(pending)
    report.seconds = time.perf_counter() - started
    return report


def format_report(report: IngestReport) -> str:
    lines = [
        f"{report.files} files: {report.indexed} indexed ({report.chunks} chunks), {report.skipped} unchanged "
        f"(skipped), {report.unchanged} unchanged (worker), {report.deleted} deleted, {report.failed} failed, "
        f"{report.timed_out} timed out",
        f"{report.seconds:.1f}s, {report.docs_per_s:.1f} docs/s, {report.chunks_per_s:.1f} chunks/s",
    ]
    lines.extend(f"  error {doc_id}: {reason}" for doc_id, reason in report.errors[:20])
    if len(report.errors) > 20:
        lines.append(f"  ... and {len(report.errors) - 20} more errors")
    return "\n".join(lines)
