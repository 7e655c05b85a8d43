"""Idempotent topic creation from the single declaration in :mod:`schemas.topics`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from infra.kafka_security import admin_client
from infra.settings import Settings
from schemas.topics import TOPICS, TopicSpec


def topic_durability(settings: Settings) -> dict[str, str]:
    """The per-topic config that makes ``acks=all`` mean "on ``min_insync_replicas`` brokers"."""
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = TOPICS, *, extra: Iterable[NewTopic] = ()
) -> list[str]:
    """Create missing topics; existing ones are left alone. Returns the names that were created."""
    wanted = [
        NewTopic(
            name=settings.topic(spec.topic),
            num_partitions=spec.partition_count(settings.topic_partitions),
            replication_factor=settings.replication_factor,
            topic_configs={**topic_durability(settings), **spec.config},
        )
        for spec in specs
    ]
    wanted.extend(extra)
    admin = await admin_client(settings)
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # Another process may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics(missing)
                # The broker answers per topic; a refusal (e.g. TopicAuthorizationFailed) must not pass silently.
                for topic, error_code, *message in response.topic_errors:
                    if error_code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(error_code)(f"creating topic {topic}: {message[0] if message else ''}")
        return [topic.name for topic in missing]
    finally:
        await admin.close()


async def delete_topics(settings: Settings, names: Iterable[str]) -> None:
    admin = await admin_client(settings, attempts=1)
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
