"""Idempotent topic creation from the single declaration in :mod:`schemas.topics`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from infra.settings import Settings
from schemas.topics import TOPICS, TopicSpec


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = TOPICS, *, extra: Iterable[NewTopic] = ()
) -> list[str]:
    """Create missing topics; existing ones are left alone. Returns the names that were created."""
    wanted = [
        NewTopic(
            name=settings.topic(spec.topic),
            num_partitions=spec.partition_count(settings.topic_partitions),
            replication_factor=1,
            topic_configs=dict(spec.config),
        )
        for spec in specs
    ]
    wanted.extend(extra)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="ragstream-admin")
    for attempt in range(20):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # Another process may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()


async def delete_topics(settings: Settings, names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="ragstream-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
