"""Every Kafka topic ragstream uses, declared once, with a typed key.

Code names a topic by :class:`Topic` (``Topic.QUERIES``), so a typo fails the type check instead of a produce at run
time. The worker builds its Faust topics from :data:`TOPICS` and ``ragstream up`` creates them (idempotently) with
the same partitions and configs. Names carry the schema major version, so a breaking event change gets new topics.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


class Topic(enum.StrEnum):
    """How code refers to a topic; the value is the name after the deployment's prefix."""

    DOCUMENTS = "documents.v1"
    CHUNKS = "chunks.v1"
    EMBEDDED = "chunks.embedded.v1"
    DOCUMENT_ACKS = "documents.acks.v1"
    QUERIES = "queries.v1"
    QUERY_STAGES = "queries.stages.v1"
    ANSWERS = "answers.v1"
    CANCELLATIONS = "cancellations.v1"
    CACHE_INVALIDATIONS = "cache.invalidations.v1"
    DEAD_LETTERS = "dead-letters.v1"
    PROMPTS = "prompts.v1"
    EVAL_CASES = "eval.cases.v1"
    EVAL_RESULTS = "eval.results.v1"
    FINETUNE = "finetune.v1"
    ADAPTERS = "adapters.v1"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    partitions: int | None = None  # None: the deployment's default (``Settings.topic_partitions``)
    config: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""

    def name(self, prefix: str) -> str:
        return topic_name(self.topic, prefix)

    def partition_count(self, default: int) -> int:
        return self.partitions if self.partitions is not None else default


def topic_name(topic: Topic, prefix: str) -> str:
    return f"{prefix}.{topic.value}"


def bridge_reply_topic(prefix: str, instance: str) -> str:
    """Each bridge instance consumes only its own reply topic, created when the instance starts."""
    return f"{prefix}.replies.{instance}.v1"


_DELETE_7D = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
_COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(DAY_MS)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.DOCUMENTS, config=_DELETE_7D, purpose="document upserts and deletes"),
    TopicSpec(Topic.CHUNKS, config=_DELETE_7D, purpose="chunks awaiting embedding"),
    TopicSpec(Topic.EMBEDDED, config=_DELETE_7D, purpose="embedded chunks awaiting indexing"),
    TopicSpec(Topic.DOCUMENT_ACKS, config=_DELETE_7D, purpose="per-document index acks"),
    TopicSpec(Topic.QUERIES, config=_DELETE_7D, purpose="query requests (replayable traffic)"),
    TopicSpec(Topic.QUERY_STAGES, config=_DELETE_7D, purpose="intermediate query stages"),
    TopicSpec(
        Topic.ANSWERS,
        config={"cleanup.policy": "delete", "retention.ms": str(DAY_MS)},
        purpose="answer deltas and results for requests that name no bridge reply topic",
    ),
    TopicSpec(Topic.CANCELLATIONS, config={"retention.ms": str(DAY_MS)}, purpose="cancel requests"),
    TopicSpec(Topic.CACHE_INVALIDATIONS, config=_DELETE_7D, purpose="changed documents"),
    TopicSpec(
        Topic.DEAD_LETTERS,
        partitions=1,
        config={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        purpose="inputs a stage could not decode or process, with the reason",
    ),
    TopicSpec(Topic.PROMPTS, partitions=1, config=_COMPACT, purpose="prompt registry (compacted)"),
    TopicSpec(Topic.EVAL_CASES, config=_DELETE_7D, purpose="evaluation cases"),
    TopicSpec(Topic.EVAL_RESULTS, config=_DELETE_7D, purpose="evaluation results"),
    TopicSpec(Topic.FINETUNE, partitions=1, config=_DELETE_7D, purpose="fine-tune progress and results"),
    TopicSpec(Topic.ADAPTERS, partitions=1, config=_COMPACT, purpose="LoRA adapter registry per tenant (compacted)"),
)

BY_TOPIC: Mapping[Topic, TopicSpec] = {spec.topic: spec for spec in TOPICS}
