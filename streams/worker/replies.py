"""Which reply addresses a worker answers to.

A request names its own reply topic. Producing to a topic that does not exist blocks the producer until its
metadata timeout (minutes), and a worker's actors would stall one by one on requests naming made-up topics. So the
address is checked before any work and before any reply: the topic must look like a reply topic of this
deployment (the default answers topic, the eval results topic, or a bridge's ``replies.<instance>`` topic) and
exist, with the partition the request names. Answers are cached; an unknown topic is looked up again at most every
``refresh_s`` seconds, so a flood of bad addresses costs one metadata request per interval.

A bridge creates its reply topic at start and asks at once; the broker's answer to a metadata request can lag the
creation by a moment (a bridge's first requests were refused 250 ms after its topic was created). So a name that
looks like a reply topic but is missing is looked up again over ``confirm_s`` before it is refused: a made-up
topic costs that much once per ``refresh_s``, never the producer's minutes.
"""

from __future__ import annotations

import asyncio
import re
import time

from aiokafka import AIOKafkaConsumer

from infra.kafka_security import client_options
from infra.settings import Settings
from schemas.events import ReplyTo
from schemas.topics import Topic
from streams.kafka import partition_count


class InvalidReplyAddress(ValueError):
    """The request's ``reply_to`` cannot be answered; the message says why."""


class ReplyAddresses:
    def __init__(self, settings: Settings, *, refresh_s: float = 5.0, confirm_s: float = 2.0) -> None:
        self.settings = settings
        self.refresh_s = refresh_s
        self.confirm_s = confirm_s
        prefix = re.escape(settings.topic_prefix)
        self._bridge_topic = re.compile(rf"^{prefix}\.replies\.[A-Za-z0-9_-]{{1,200}}\.v1$")
        self._fixed = {settings.reply_topic, settings.topic(Topic.EVAL_RESULTS)}
        self._partitions: dict[str, int] = {}
        self._missed_at: dict[str, float] = {}
        self._lookups: dict[str, asyncio.Future[int]] = {}
        self._starting = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None

    def is_reply_topic(self, topic: str) -> bool:
        return topic in self._fixed or bool(self._bridge_topic.match(topic))

    async def problem(self, reply_to: ReplyTo) -> str | None:
        """Why ``reply_to`` cannot be answered, or None."""
        topic = reply_to.topic
        if not self.is_reply_topic(topic):
            return f"reply_to.topic {topic[:200]!r} is not a reply topic of this deployment"
        partitions = await self._partition_count(topic)
        if partitions == 0:
            return f"reply topic {topic!r} does not exist"
        if reply_to.partition is not None and not 0 <= reply_to.partition < partitions:
            return f"reply topic {topic!r} has no partition {reply_to.partition} (it has {partitions})"
        return None

    async def check(self, reply_to: ReplyTo) -> None:
        problem = await self.problem(reply_to)
        if problem is not None:
            raise InvalidReplyAddress(problem)

    async def _partition_count(self, topic: str) -> int:
        known = self._partitions.get(topic)
        if known is not None:
            return known
        if time.monotonic() - self._missed_at.get(topic, float("-inf")) < self.refresh_s:
            return 0
        # Requests naming the same new topic arrive together: they share one lookup, and none is refused because
        # another one's lookup is still under way.
        lookup = self._lookups.get(topic)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(topic))
            self._lookups[topic] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(topic, None))
        return await asyncio.shield(lookup)

    async def _look_up(self, topic: str) -> int:
        deadline = time.monotonic() + self.confirm_s
        delay = 0.05
        while True:
            count = await partition_count(await self._metadata(), topic)
            if count:
                self._partitions[topic] = count
                return count
            if time.monotonic() + delay > deadline:
                self._missed_at[topic] = time.monotonic()
                return 0
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _metadata(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.settings.kafka_servers,
                    enable_auto_commit=False,
                    **client_options(self.settings),
                )
                await consumer.start()
                self._consumer = consumer
            return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
