"""A document event's own logic: validation, content hashes, loading and chunking, and the text each chunk is
embedded as. Pure functions; the agents run the CPU-heavy ones in a thread."""

from __future__ import annotations

import hashlib

from processors.adapters.doc_states import check_tenant
from processors.ingest.chunking import Chunker, chunk_id
from processors.ingest.loaders import load
from schemas.events import Chunk, DocumentUpsert, Metadata

MAX_DOC_ID = 1024
HEADER_CHARS = 200


class InvalidDocument(ValueError):
    """A document event that is well-formed msgpack but not a valid document: dead letter, with this reason."""


def validate(event: DocumentUpsert) -> None:
    try:
        check_tenant(event.tenant)
    except ValueError as exc:
        raise InvalidDocument(str(exc)) from None
    if not event.doc_id or len(event.doc_id) > MAX_DOC_ID:
        raise InvalidDocument(f"doc_id must be 1-{MAX_DOC_ID} characters")
    if event.version < 1:
        raise InvalidDocument(f"version must be >= 1, got {event.version}")


def content_hash(event: DocumentUpsert) -> str:
    if event.content_hash:
        return event.content_hash
    return hash_bytes(event.content_bytes or event.content.encode())


def hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def build_chunks(event: DocumentUpsert, chunker: Chunker, digest: str) -> list[Chunk]:
    """Load (raises :class:`~processors.ingest.loaders.LoadError` on a corrupt document) and chunk."""
    doc = load(event.content, event.content_type, raw=event.content_bytes, title=event.title,
               source_uri=event.source_uri)  # fmt: skip
    spans = chunker.split(doc)
    chunks = []
    for index, span in enumerate(spans):
        metadata: Metadata = dict(event.metadata)
        metadata.update(anchor=span.anchor, content_type=event.content_type, size=span.size)
        chunks.append(
            Chunk(
                chunk_id=chunk_id(event.tenant, event.doc_id, event.version, index),
                tenant=event.tenant,
                doc_id=event.doc_id,
                version=event.version,
                index=index,
                text=doc.text[span.start : span.end],
                source_uri=event.source_uri,
                title=doc.title,
                heading_path=list(span.heading_path),
                char_start=span.start,
                char_end=span.end,
                metadata=metadata,
                total=len(spans),
                content_hash=digest,
                document_event_id=event.event_id,
            )
        )
    return chunks


def embed_text(chunk: Chunk) -> str:
    """The chunk with its heading path (or title) in front: where a passage sits is part of what it means."""
    header = " > ".join(chunk.heading_path) or chunk.title
    return f"{header[:HEADER_CHARS]}\n\n{chunk.text}" if header else chunk.text


def doc_key(tenant: str, doc_id: str) -> str:
    return f"{tenant}/{doc_id}"
