"""Every event ragstream puts on Kafka, as msgspec Structs.

Rules that keep the wire stable:
- Each event is tagged by ``kind`` (a dotted name), so one topic can carry a union and any consumer knows what it
  holds without guessing.
- Decoding ignores fields it does not know, and every field added later has a default: an old worker reads a new
  producer's events, a new worker reads old events.
- ``schema_version`` is the major version of the event shape. It changes only for breaking changes, and topic
  names carry the same number (``ragstream.queries.v1``), so breaking changes get new topics, not surprises.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

import msgspec

from schemas.finetune import AdapterEvalReport

SCHEMA_VERSION = 1

JsonScalar = str | int | float | bool | None
Metadata = dict[str, JsonScalar]


def new_id() -> str:
    """A random 128-bit id, hex: request ids, event ids."""
    return uuid.uuid4().hex


def now() -> float:
    return time.time()


class Event(msgspec.Struct, kw_only=True, tag_field="kind"):
    """Fields every event has."""

    schema_version: int = SCHEMA_VERSION
    event_id: str = msgspec.field(default_factory=new_id)
    created_at: float = msgspec.field(default_factory=now)


# --- documents -------------------------------------------------------------------------------------------------


class DocumentUpsert(Event, tag="document.upsert"):
    """A new document, or a new version of one. Keyed ``tenant/doc_id`` so versions of a doc stay ordered."""

    tenant: str
    doc_id: str
    version: int
    content: str
    content_type: str = "text/plain"
    source_uri: str = ""
    title: str = ""
    content_hash: str = ""
    metadata: Metadata = msgspec.field(default_factory=dict)
    # Raw file bytes when ``content`` cannot carry them (PDF, or text that is not valid UTF-8); the loader decodes.
    content_bytes: bytes = b""
    # Index again even if the content hash matches the live version (embeddings then come from the cache).
    reindex: bool = False


class DocumentDelete(Event, tag="document.delete"):
    """Remove every chunk of a document (all versions)."""

    tenant: str
    doc_id: str
    reason: str = ""


DocumentEvent = DocumentUpsert | DocumentDelete


class Chunk(Event, tag="chunk"):
    """A piece of a document, with enough provenance for a citation to point at the exact place."""

    chunk_id: str
    tenant: str
    doc_id: str
    version: int
    index: int
    text: str
    source_uri: str = ""
    title: str = ""
    heading_path: list[str] = msgspec.field(default_factory=list)
    char_start: int = 0
    char_end: int = 0
    metadata: Metadata = msgspec.field(default_factory=dict)
    # Chunks in this document version, so the indexer knows when the version is complete and can go live.
    total: int = 0
    content_hash: str = ""
    # event_id of the DocumentUpsert this chunk came from, echoed in the index ack.
    document_event_id: str = ""


class EmbeddedChunk(Event, tag="chunk.embedded"):
    chunk: Chunk
    embedding: list[float]
    model: str


class DocumentIndexed(Event, tag="document.indexed"):
    """Acknowledgement for one document event, keyed by ``tenant/doc_id``."""

    tenant: str
    doc_id: str
    version: int
    status: Literal["indexed", "unchanged", "deleted", "failed"]
    chunks: int = 0
    error: str = ""
    # event_id of the document event this acknowledges, so a producer can match acks to what it sent.
    event_ref: str = ""


class CacheInvalidation(Event, tag="cache.invalidate"):
    """Documents changed: cached answers that cited them are stale."""

    tenant: str
    doc_ids: list[str]
    reason: str = ""


# --- queries ---------------------------------------------------------------------------------------------------


class ReplyTo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a query's answer events go. A bridge instance names its own topic or partition."""

    topic: str
    partition: int | None = None


class QueryOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    model: str | None = None
    prompt_version: str | None = None
    use_cache: bool = True
    # How the answer is made: "generate" (the model writes it), "gated" (the model writes it when a sentence of the
    # sources answers the question, else the refusal without a model call), or "extractive" (the sentences of the
    # sources that answer it, quoted with their citations). None: the deployment's default.
    strategy: str | None = None
    # Reorder the retrieved candidates with the reranker (and drop those below the deployment's min_relevance).
    # None: the deployment's default. False trades ranking quality for latency: no reranker call.
    rerank: bool | None = None


class QueryRequest(Event, tag="query.request"):
    """A question from a client or another service. Keyed by ``request_id``."""

    request_id: str
    tenant: str
    question: str
    reply_to: ReplyTo
    session_id: str = ""
    options: QueryOptions = msgspec.field(default_factory=QueryOptions)
    # Unix time after which nobody waits for the answer; stages drop expired work.
    deadline: float | None = None


class GuardVerdict(msgspec.Struct, kw_only=True, omit_defaults=True):
    action: Literal["allow", "modify", "block"]
    reasons: list[str] = msgspec.field(default_factory=list)
    scores: dict[str, float] = msgspec.field(default_factory=dict)


class Passage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A retrieved chunk as the query path sees it."""

    chunk_id: str
    doc_id: str
    text: str
    score: float
    source_uri: str = ""
    title: str = ""
    heading_path: list[str] = msgspec.field(default_factory=list)
    char_start: int = 0
    char_end: int = 0


class RankedPassage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One retrieved candidate as the pipeline ranked it (by the reranker, when it reranks): what an evaluation
    needs to score the retrieval behind an answer. ``text`` only for the passages that went into the prompt."""

    chunk_id: str
    doc_id: str
    score: float
    in_context: bool = False
    char_start: int = 0
    char_end: int = 0
    source_uri: str = ""
    text: str = ""
    # Why it was kept out of the prompt although it ranked high enough (e.g. instructions injected in a document).
    withheld: str = ""


class PromptRef(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    version: str
    content_hash: str


class AdapterRef(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Identity of a LoRA adapter, like :class:`PromptRef` for prompts: ``name`` (the tenant's adapter line) and
    ``version`` (1, 2, ... in registration order), the sha256 of its weights file, the base model it adapts, and the
    sha256 of the training set and of the config it came from."""

    name: str
    version: str
    content_hash: str
    base_model: str
    data_hash: str = ""
    config_hash: str = ""


class PromptedQuery(Event, tag="query.prompted"):
    """Everything generation needs: the rendered prompt, the model, and the sources behind each [n]."""

    request: QueryRequest
    question: str
    prompt: str
    prompt_ref: PromptRef | None
    model: str
    passages: list[Passage] = msgspec.field(default_factory=list)
    timings_ms: dict[str, float] = msgspec.field(default_factory=dict)
    # The (masked) question's embedding, so the answer can be cached without embedding it again.
    embedding: list[float] = msgspec.field(default_factory=list)
    input_verdict: GuardVerdict | None = None
    # Every retrieved candidate in the pipeline's rank order; carried to the answer (AnswerDone.retrieval).
    ranked: list[RankedPassage] = msgspec.field(default_factory=list)
    # The tenant's active LoRA adapter for ``model`` (None: the base model), applied per request by the server.
    adapter: AdapterRef | None = None


class CancelRequest(Event, tag="query.cancel"):
    request_id: str
    reason: str = "client"


# --- answers (reply topics) ------------------------------------------------------------------------------------


class Citation(msgspec.Struct, kw_only=True, omit_defaults=True):
    number: int
    chunk_id: str
    doc_id: str
    source_uri: str = ""
    title: str = ""
    heading_path: list[str] = msgspec.field(default_factory=list)
    char_start: int = 0
    char_end: int = 0


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TokenDelta(Event, tag="answer.delta"):
    """A batch of answer text. ``seq`` starts at 0 and has no gaps, so a client can resume and dedupe."""

    request_id: str
    seq: int
    text: str
    tokens: int = 0


class AnswerDone(Event, tag="answer.done"):
    request_id: str
    text: str
    citations: list[Citation] = msgspec.field(default_factory=list)
    model: str = ""
    prompt_ref: PromptRef | None = None
    finish_reason: Literal["stop", "length", "cancelled", "refused", "blocked"] = "stop"
    cached: bool = False
    usage: Usage = msgspec.field(default_factory=Usage)
    timings_ms: dict[str, float] = msgspec.field(default_factory=dict)
    # Number of deltas sent before this event, so a client knows when it has them all.
    deltas: int = 0
    # What the guards did: input screening and the streaming output check (masking, citations, groundedness).
    input_verdict: GuardVerdict | None = None
    output_verdict: GuardVerdict | None = None
    # The retrieval behind this answer, in rank order, marking the passages the prompt held (empty for a cache hit):
    # an evaluation scores what the pipeline did, not a re-run of the search.
    retrieval: list[RankedPassage] = msgspec.field(default_factory=list)
    # The LoRA adapter that produced the answer (None: the base model, or not a generated answer).
    adapter: AdapterRef | None = None


class AnswerError(Event, tag="answer.error"):
    """A stage failed or refused: the client always hears about it."""

    request_id: str
    code: str
    message: str
    stage: str = ""
    retryable: bool = False


AnswerEvent = TokenDelta | AnswerDone | AnswerError


# --- operations ------------------------------------------------------------------------------------------------


class DeadLetter(Event, tag="dead_letter"):
    """An input a stage could not decode or process, kept whole so it can be replayed after a fix."""

    source_topic: str
    partition: int
    offset: int
    stage: str
    error_type: str
    reason: str
    key: bytes | None = None
    value: bytes = b""
    headers: dict[str, bytes] = msgspec.field(default_factory=dict)
    # True when PII in ``value`` was masked before writing: the letter is then for diagnosis, not byte-exact replay.
    value_masked: bool = False


# --- prompt registry (compacted topic) -----------------------------------------------------------------------


class PromptRegistered(Event, tag="prompt.registered"):
    """One immutable prompt version. Keyed ``name@version``, so compaction keeps every version's content."""

    name: str
    version: str
    template: str
    content_hash: str
    description: str = ""
    variables: list[str] = msgspec.field(default_factory=list)


class PromptPromoted(Event, tag="prompt.promoted"):
    """The active pointer, keyed ``name``: compaction keeps only the latest, so it carries the whole stack of
    previously active versions (``history``, oldest first, ``version`` last) that rollback walks back through."""

    name: str
    version: str
    history: list[str] = msgspec.field(default_factory=list)


class PromptRolledBack(Event, tag="prompt.rolled_back"):
    """The active pointer after a rollback (same key and state as :class:`PromptPromoted`)."""

    name: str
    version: str
    rolled_back_from: str
    history: list[str] = msgspec.field(default_factory=list)


PromptRecord = PromptRegistered | PromptPromoted | PromptRolledBack


# --- evaluation (ragstream eval) -------------------------------------------------------------------------------


class EvalCaseEvent(Event, tag="eval.case"):
    """One golden case of an evaluation run, as sent: keyed ``run_id/case_id``; ``request_id`` links its answer."""

    run_id: str
    case_id: str
    request_id: str
    tenant: str
    question: str
    expect_refusal: bool = False
    reference_answer: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    options: QueryOptions = msgspec.field(default_factory=QueryOptions)


class EvalCaseResult(Event, tag="eval.result"):
    """A scored case, keyed ``run_id/case_id``; ``scores`` holds every metric that could be computed."""

    run_id: str
    case_id: str
    request_id: str
    passed: bool
    refused: bool = False
    finish_reason: str = ""
    error: str = ""
    scores: dict[str, float] = msgspec.field(default_factory=dict)


# --- fine-tuning (ragstream finetune) ---------------------------------------------------------------------------


FinetunePhase = Literal["build", "train", "eval", "gate", "done", "failed"]


class FinetuneProgress(Event, tag="finetune.progress"):
    """Where a fine-tune run is, keyed ``run_id``: one event per phase change and per reported training step."""

    run_id: str
    tenant: str
    phase: FinetunePhase
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    step_ms: float | None = None
    message: str = ""


class FinetuneResult(Event, tag="finetune.result"):
    """How a run ended, keyed ``run_id``: the adapter it registered (if any), base and adapter metrics on the
    held-out split, and whether the gate promoted it (``reasons`` says why not)."""

    run_id: str
    tenant: str
    decision: Literal["promoted", "rejected", "failed"]
    adapter: AdapterRef | None = None
    reasons: list[str] = msgspec.field(default_factory=list)
    base_metrics: dict[str, float] = msgspec.field(default_factory=dict)
    adapter_metrics: dict[str, float] = msgspec.field(default_factory=dict)
    report_path: str = ""
    error: str = ""


class AdapterRegistered(Event, tag="adapter.registered"):
    """One immutable adapter version, a candidate for ``tenant`` with its evaluation report. Keyed
    ``tenant@version`` on the compacted adapters topic, so compaction keeps every version."""

    tenant: str
    adapter: AdapterRef
    path: str  # the folder holding the PEFT adapter (adapter_config.json, adapter_model.safetensors, manifest.json)
    report: AdapterEvalReport | None = None
    run_id: str = ""


class AdapterPromoted(Event, tag="adapter.promoted"):
    """The tenant's active adapter pointer, keyed ``tenant``: ``version`` active ("" = the base model, no adapter),
    ``history`` the stack of promoted versions (oldest first) that rollback walks back through."""

    tenant: str
    version: str
    history: list[str] = msgspec.field(default_factory=list)


class AdapterRolledBack(Event, tag="adapter.rolled_back"):
    """The pointer after a rollback (same key and state as :class:`AdapterPromoted`)."""

    tenant: str
    version: str
    rolled_back_from: str
    history: list[str] = msgspec.field(default_factory=list)


AdapterRecord = AdapterRegistered | AdapterPromoted | AdapterRolledBack


AnyEvent = (
    DocumentUpsert
    | DocumentDelete
    | Chunk
    | EmbeddedChunk
    | DocumentIndexed
    | CacheInvalidation
    | QueryRequest
    | PromptedQuery
    | CancelRequest
    | TokenDelta
    | AnswerDone
    | AnswerError
    | DeadLetter
    | PromptRegistered
    | PromptPromoted
    | PromptRolledBack
    | EvalCaseEvent
    | EvalCaseResult
    | FinetuneProgress
    | FinetuneResult
    | AdapterRegistered
    | AdapterPromoted
    | AdapterRolledBack
)
