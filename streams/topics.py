"""Every Kafka topic ragstream uses, declared once.

The Faust app builds its topics from this table and ``ragstream up`` creates them (idempotently) with the same
partitions and configs. Names carry the schema major version, so a breaking event change gets new topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.settings import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    key: str  # how code refers to it
    suffix: str  # the name after the prefix
    partitions: int | None = None  # None: settings.topic_partitions
    config: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""

    def name(self, settings: Settings) -> str:
        return f"{settings.topic_prefix}.{self.suffix}"

    def partition_count(self, settings: Settings) -> int:
        return self.partitions if self.partitions is not None else settings.topic_partitions


_DELETE_7D = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
_COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(DAY_MS)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("documents", "documents.v1", config=_DELETE_7D, purpose="document upserts and deletes"),
    TopicSpec("chunks", "chunks.v1", config=_DELETE_7D, purpose="chunks awaiting embedding"),
    TopicSpec("embedded", "chunks.embedded.v1", config=_DELETE_7D, purpose="embedded chunks awaiting indexing"),
    TopicSpec("document_acks", "documents.acks.v1", config=_DELETE_7D, purpose="per-document index acks"),
    TopicSpec("queries", "queries.v1", config=_DELETE_7D, purpose="query requests (replayable traffic)"),
    TopicSpec("query_stages", "queries.stages.v1", config=_DELETE_7D, purpose="intermediate query stages"),
    TopicSpec(
        "answers",
        "answers.v1",
        config={"cleanup.policy": "delete", "retention.ms": str(DAY_MS)},
        purpose="answer deltas and results for requests that name no bridge reply topic",
    ),
    TopicSpec("cancellations", "cancellations.v1", config={"retention.ms": str(DAY_MS)}, purpose="cancel requests"),
    TopicSpec("cache_invalidations", "cache.invalidations.v1", config=_DELETE_7D, purpose="changed documents"),
    TopicSpec(
        "dead_letters",
        "dead-letters.v1",
        partitions=1,
        config={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        purpose="inputs a stage could not decode or process, with the reason",
    ),
    TopicSpec("prompts", "prompts.v1", partitions=1, config=_COMPACT, purpose="prompt registry (compacted)"),
    TopicSpec("eval_cases", "eval.cases.v1", config=_DELETE_7D, purpose="evaluation cases"),
    TopicSpec("eval_results", "eval.results.v1", config=_DELETE_7D, purpose="evaluation results"),
)

BY_KEY: Mapping[str, TopicSpec] = {spec.key: spec for spec in TOPICS}


def topic_name(key: str, settings: Settings) -> str:
    return BY_KEY[key].name(settings)


def bridge_reply_topic(settings: Settings, instance: str) -> str:
    """Each bridge instance consumes only its own reply topic, created when the instance starts."""
    return f"{settings.topic_prefix}.replies.{instance}.v1"
