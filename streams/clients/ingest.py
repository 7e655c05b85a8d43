"""``ragstream ingest``: walk files, send document events to Kafka, and wait for the index acknowledgements.

A file whose content hash equals its live version's hash (read from the document state in Redis) is skipped
without producing anything, so re-running on an unchanged tree does no work. Changed files get the next version
number, and the command returns when every document it sent is acknowledged (indexed, unchanged, failed) by the
indexer. It gives up only when no acknowledgement has come for ``idle_timeout_s`` (a large corpus takes as long as
it takes), and shows its progress: a bar on a terminal, a line every few seconds otherwise (documents and chunks
done, rate, ETA).

Files under the default exclude patterns (:data:`DEFAULT_EXCLUDES`: Sphinx's copies of the reST sources and its
index pages) are left out and counted in the report, so a documentation tree is indexed once, as HTML.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.kafka_security import client_options
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
# Sphinx copies every page's reST source next to the HTML (the same text again, with citations pointing at markup),
# and its index pages hold no prose; ``--no-default-excludes`` keeps them.
DEFAULT_EXCLUDES = ("_sources/*", "*/_sources/*", "genindex*.html", "*/genindex*.html", "search.html",
                    "*/search.html", "py-modindex.html", "*/py-modindex.html")  # fmt: skip
PROGRESS_EVERY_S = 5.0


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
    excluded: int = 0  # matched an exclude pattern, not read
    exclude: tuple[str, ...] = ()
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


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _relative_to_root(path: Path, root: Path) -> str:
    """``path`` below ``root`` as the tree spells it: a file reached through a symlink (Debian's docs link
    ``_static/jquery.js`` into /usr/share/javascript) keeps the id of where it appears, not of its target."""
    for candidate, base in ((Path(os.path.abspath(path)), root), (path.resolve(), root.resolve())):
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            continue
    raise ValueError(f"{path} is not under --root {root}")


def discover(
    paths: Sequence[str | Path],
    *,
    prefix: str = "",
    root: str | Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDES,
) -> tuple[list[SourceFile], int]:
    """Supported files under ``paths``, and how many matched an ``exclude`` pattern (glob on the doc id's path).

    A doc id is ``prefix`` + the path relative to ``root`` when given (so a subset of a tree gets the same ids as
    the whole tree), else relative to the directory given (or the file's name)."""
    base = Path(os.path.abspath(Path(root).expanduser())) if root is not None else None
    found: dict[str, SourceFile] = {}
    skipped = 0
    for raw in paths:
        top = Path(raw).expanduser()
        if top.is_dir():
            candidates: Iterator[tuple[Path, str]] = (
                (p, p.relative_to(top).as_posix()) for p in sorted(top.rglob("*")) if p.is_file()
            )
        elif top.is_file():
            candidates = iter([(top, top.name)])
        else:
            raise FileNotFoundError(f"no such file or directory: {top}")
        for path, below_top in candidates:
            content_type = content_type_for(path.name)
            if content_type is None:  # not a document (scripts, images, ...), wherever it lives
                continue
            relative = below_top if base is None else _relative_to_root(path, base)
            if excluded(relative, exclude):
                skipped += 1
                continue
            doc_id = f"{prefix}{relative}"
            found[doc_id] = SourceFile(path.resolve(), doc_id, content_type)
    return list(found.values()), skipped


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
            settings.kafka_servers, self.acks_topic, fetch_max_wait_ms=20, auth=client_options(settings),
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
    """A rich progress bar on a terminal; otherwise a line every ``every_s`` seconds, so a log or a CI run shows
    that ingestion is moving (documents and chunks done, rate, ETA); or nothing (``mode="off"``)."""

    def __init__(self, mode: str, total: int, *, every_s: float = PROGRESS_EVERY_S,
                 write: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.mode = mode
        self.total = total
        self.every_s = every_s
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.last_line = float("-inf")  # the first update always shows a line
        self.bar: Any = None
        self.task: Any = None
        if mode != "bar":
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks indexed"), TextColumn("{task.fields[rate]:.1f} docs/s"),
            TextColumn("[red]{task.fields[errors]} errors"), TimeElapsedColumn(),
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("indexing", total=total, chunks=0, rate=0.0, errors=0)

    def update(self, report: IngestReport, *, final: bool = False) -> None:
        done = _done(report)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=self.total, chunks=report.chunks,
                            rate=report.docs_per_s, errors=report.failed)  # fmt: skip
        elif self.mode == "lines" and (final or time.monotonic() - self.last_line >= self.every_s):
            self.last_line = time.monotonic()
            self.write(progress_line(report, done, self.total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress_line(report: IngestReport, done: int, total: int) -> str:
    rate = report.docs_per_s
    left = total - done
    eta = f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
    return (
        f"[ingest] {done}/{total} documents ({report.indexed} indexed, {report.skipped + report.unchanged} unchanged, "
        f"{report.failed} failed), {report.chunks} chunks, {rate:.1f} docs/s, {report.chunks_per_s:.0f} chunks/s"
        f"{eta}"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


async def ingest(
    settings: Settings,
    paths: Sequence[str | Path],
    tenant: str,
    *,
    prefix: str = "",
    root: str | Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDES,
    force: bool = False,
    idle_timeout_s: float = 180.0,
    timeout_s: float | None = None,
    progress: bool | None = None,
) -> IngestReport:
    """Send every changed file under ``paths`` and wait for its ack; see the module docstring.

    ``progress``: None shows a bar on a terminal and lines otherwise; False shows nothing. ``timeout_s`` caps the
    whole wait (None: no cap); ``idle_timeout_s`` ends it when no acknowledgement arrived for that long."""
    from streams.redis_client import redis_client

    check_tenant(tenant)
    report = IngestReport()
    sources, report.excluded = discover(paths, prefix=prefix, root=root, exclude=exclude)
    report.exclude = tuple(exclude)
    report.files = len(sources)
    started = time.perf_counter()
    mode = "off" if progress is False else ("bar" if os.isatty(2) else "lines")
    bar = _Progress(mode, len(sources))
    redis = redis_client(settings.redis_address)
    pending: dict[str, str] = {}  # event_id -> doc_id
    why_stopped = ""
    try:
        states = DocStates(redis, prefix=settings.topic_prefix)
        async with DocumentChannel(settings) as channel:
            deliveries: list[tuple[str, asyncio.Future[Any]]] = []
            for start in range(0, len(sources), READ_BATCH):
                batch = sources[start : start + READ_BATCH]
                contents = await asyncio.gather(
                    *(asyncio.to_thread(s.path.read_bytes) for s in batch), return_exceptions=True
                )
                doc_states = await states.get_many(tenant, [s.doc_id for s in batch])
                for source, data, state in zip(batch, contents, doc_states, strict=True):
                    if isinstance(data, BaseException):  # unreadable: reported, and the rest goes on
                        report.failed += 1
                        report.errors.append((source.doc_id, f"cannot read {source.path}: {data}"))
                        continue
                    if not force and state.live > 0 and state.hash == hash_bytes(data):
                        report.skipped += 1
                        continue
                    event = make_event(source, data, tenant, state.next_version, reindex=force)
                    pending[event.event_id] = source.doc_id
                    deliveries.append((event.event_id, await channel.send(event)))
                    report.sent += 1
                _drain(channel, pending, report)
                report.seconds = time.perf_counter() - started
                bar.update(report)
            for event_id, delivery in deliveries:
                try:
                    await delivery
                except Exception as exc:  # e.g. larger than the broker accepts
                    doc_id = pending.pop(event_id, event_id)
                    report.failed += 1
                    report.errors.append((doc_id, f"not sent: {type(exc).__name__}: {exc}"))
            deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
            last_ack = time.monotonic()
            while pending:
                now = time.monotonic()
                if now >= deadline:
                    why_stopped = f"no acknowledgement within the {timeout_s:.0f}s limit"
                    break
                if now - last_ack >= idle_timeout_s:
                    why_stopped = f"no acknowledgement for {idle_timeout_s:.0f}s (is a worker running?)"
                    break
                channel.check_reading()
                try:
                    ack = await asyncio.wait_for(channel.acks.get(), min(deadline - now, 0.5))
                    _apply(ack, pending, report)
                    last_ack = time.monotonic()
                except TimeoutError:
                    pass
                if _drain(channel, pending, report):
                    last_ack = time.monotonic()
                report.seconds = time.perf_counter() - started
                bar.update(report)
    finally:
        await redis.aclose()
        report.seconds = time.perf_counter() - started
        bar.update(report, final=True)
        bar.close()
    report.timed_out = len(pending)
    report.errors.extend((doc_id, why_stopped) for doc_id in pending.values())
    return report


def _done(report: IngestReport) -> int:
    return report.skipped + report.indexed + report.unchanged + report.deleted + report.failed


def _drain(channel: DocumentChannel, pending: dict[str, str], report: IngestReport) -> int:
    """Apply every ack already received; returns how many there were."""
    count = 0
    while not channel.acks.empty():
        _apply(channel.acks.get_nowait(), pending, report)
        count += 1
    return count


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
    ]
    if report.excluded:
        default = " (the default; --no-default-excludes keeps them)" if report.exclude == DEFAULT_EXCLUDES else ""
        lines.append(f"{report.excluded} files excluded by {', '.join(report.exclude)}{default}")
    lines += [
        f"{report.seconds:.1f}s, {report.docs_per_s:.1f} docs/s, {report.chunks_per_s:.1f} chunks/s",
    ]
    lines.extend(f"  error {doc_id}: {reason}" for doc_id, reason in report.errors[:20])
    if len(report.errors) > 20:
        lines.append(f"  ... and {len(report.errors) - 20} more errors")
    return "\n".join(lines)
