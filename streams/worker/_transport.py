"""Faust's aiokafka transport with the consumer's fetch wait made configurable.

faust-streaming 0.15 hard-codes ``fetch_max_wait_ms=1500``: on a quiet partition a fetch parks in the broker for
up to 1.5 s, and every Kafka hop of a query pays for it. The consumer object stores the value and builds its
fetcher at start, so setting it right after construction is enough. ``benchmarks/`` measures the effect.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 1500))
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
