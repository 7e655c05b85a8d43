"""The Faust application: one app per worker process, topics from :mod:`schemas.topics`."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TransportT

from infra.kafka_security import client_options
from infra.settings import Settings
from schemas.topics import TOPICS, Topic
from streams.worker import _transport


class RagstreamApp(faust.App):
    """A Faust app whose consumer fetch wait comes from settings (see :mod:`streams._transport`)."""

    fetch_max_wait_ms: int = 1500

    def _new_transport(self) -> TransportT:
        return _transport.Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _transport.Transport(self.conf.broker_producer, self)


def broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """Faust's form of :func:`infra.kafka_security.client_options` (None: PLAINTEXT)."""
    options = client_options(settings)
    if not options:
        return None
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        mechanism=options["sasl_mechanism"],
        ssl_context=options.get("ssl_context"),
    )


def create_app(settings: Settings, **overrides: Any) -> RagstreamApp:
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_servers}",
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "topic_partitions": settings.topic_partitions,
        # Topics are created by `ragstream up` from schemas/topics.py, never implicitly by a worker.
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "producer_linger_ms": settings.producer_linger_ms,
        "producer_acks": -1,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 20.0,
        "broker_commit_interval": 0.5,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": True,
        "web_port": settings.worker_web_port,
        "web_bind": settings.host,
        "web_host": settings.host,
        "datadir": str(settings.data_path / "worker"),
        "loghandlers": [],
    }
    conf.update(overrides)
    app = RagstreamApp(settings.app_id, **conf)
    app.fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    return app


class TopicTable:
    """Faust topic objects for every declared topic, values and keys as raw bytes.

    Agents decode values themselves (:mod:`streams.worker.stage`) so that an undecodable message becomes a dead letter
    instead of an exception inside Faust's stream machinery.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self._topics: dict[Topic, faust.TopicT] = {
            spec.topic: app.topic(
                settings.topic(spec.topic),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=spec.partition_count(settings.topic_partitions),
                internal=False,
            )
            for spec in TOPICS
        }

    def __getitem__(self, topic: Topic) -> faust.TopicT:
        return self._topics[topic]
