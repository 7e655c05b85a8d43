"""Kafka authentication (SASL/SCRAM) and authorization (ACLs) for ragstream's processes.

Every Kafka client in the project takes its connection options from :func:`client_options`, so one set of settings
(``RAGSTREAM_KAFKA_SECURITY_PROTOCOL``, ``_SASL_MECHANISM``, ``_USERNAME``, ``_PASSWORD``, ``_SSL_CAFILE``) secures
the Faust worker, the bridge, the clients and the admin alike.

Who may do what is declared once, in :func:`acl_bindings`, per role; each role is one SCRAM user named after it:

- ``bridge``: writes requests (``queries.v1``) and cancels; creates and reads its own reply topic
  (``<prefix>.replies.<instance>.v1``).
- ``worker``: reads every ragstream topic (in its consumer groups, ``<app_id>*``); writes stage topics, answers,
  bridge reply topics, acks, cache invalidations, dead letters and evaluation results. It cannot write requests.
- ``ingest``: writes documents, reads their acks. It can neither ask nor answer.
- ``operator``: the command-line tools (``ragstream ask``, ``ingest``, ``eval``, ``prompts``, ``replay``).
- ``monitor``: consumer-group lag exporters; describes topics and groups, reads no records.

Anyone else, and any unauthenticated client, can do nothing: the broker runs ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``, and the admin (a super user) creates topics and these ACLs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.admin import CreateAclsRequest

from infra.settings import Settings
from schemas.topics import Topic

ROLES = ("bridge", "worker", "ingest", "operator", "monitor")


def secured(settings: Settings) -> bool:
    return settings.kafka_security_protocol != "PLAINTEXT"


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producers, consumers and admin client (empty for PLAINTEXT)."""
    if not secured(settings):
        return {}
    if not settings.kafka_username or not settings.kafka_password:
        raise ValueError(
            f"RAGSTREAM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs RAGSTREAM_KAFKA_USERNAME "
            "and RAGSTREAM_KAFKA_PASSWORD"
        )
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.kafka_password,
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    return options


def parse_users(spec: str) -> dict[str, str]:
    """``user:password,user:password`` (``kafka_users``) as a mapping; refuses what the broker's formats cannot hold."""
    users: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, password = item.partition(":")
        if not sep or not name or not password:
            raise ValueError(f"kafka_users: {name or item!r} needs the form user:password")
        users[name] = password
    for name, password in users.items():
        check_credential(name, password)
    return users


def check_credential(name: str, password: str) -> None:
    """SCRAM credentials go into ``kafka-storage format --add-scram 'M=[name=N,password=P]'`` and JAAS strings."""
    bad = set('",[]=\\\n\r ') & set(name + password)
    if bad:
        raise ValueError(f"kafka user {name!r}: user names and passwords cannot contain {sorted(bad)}")


class Operation(enum.IntEnum):
    """Kafka's AclOperation codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


class Resource(enum.IntEnum):
    """Kafka's ResourceType codes."""

    TOPIC = 2
    GROUP = 3


_LITERAL = 3
_PREFIXED = 4
_ALLOW = 3


@dataclass(frozen=True)
class AclBinding:
    user: str
    resource: Resource
    name: str
    prefixed: bool
    operation: Operation

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def acl_bindings(settings: Settings, users: Mapping[str, str] | None = None) -> list[AclBinding]:
    """Every ACL ragstream needs. ``users`` maps a role to its user name (default: the role's own name)."""
    name = {role: (users or {}).get(role, role) for role in ROLES}
    everything = f"{settings.topic_prefix}."
    replies = f"{settings.topic_prefix}.replies."

    def topics(role: str, operation: Operation, *wanted: Topic) -> list[AclBinding]:
        return [AclBinding(name[role], Resource.TOPIC, settings.topic(t), False, operation) for t in wanted]

    def prefix(role: str, resource: Resource, value: str, *operations: Operation) -> list[AclBinding]:
        return [AclBinding(name[role], resource, value, True, op) for op in operations]

    return [
        # The bridge: asks and cancels; its own reply topic (created at start); sees topic names (ensure_topics).
        *topics("bridge", Operation.WRITE, Topic.QUERIES, Topic.CANCELLATIONS),
        *prefix("bridge", Resource.TOPIC, replies, Operation.CREATE, Operation.READ),
        *prefix("bridge", Resource.TOPIC, everything, Operation.DESCRIBE),
        # The worker: reads everything in its groups, answers, never asks.
        *prefix("worker", Resource.TOPIC, everything, Operation.READ),
        *prefix("worker", Resource.GROUP, settings.app_id, Operation.READ),
        *topics(
            "worker",
            Operation.WRITE,
            Topic.CHUNKS,
            Topic.EMBEDDED,
            Topic.DOCUMENT_ACKS,
            Topic.QUERY_STAGES,
            Topic.ANSWERS,
            Topic.CACHE_INVALIDATIONS,
            Topic.DEAD_LETTERS,
            Topic.EVAL_RESULTS,
        ),
        *prefix("worker", Resource.TOPIC, replies, Operation.WRITE),
        # Document producers: documents in, acks back.
        *topics("ingest", Operation.WRITE, Topic.DOCUMENTS),
        *topics("ingest", Operation.READ, Topic.DOCUMENT_ACKS),
        *prefix("ingest", Resource.TOPIC, everything, Operation.DESCRIBE),
        # The command-line tools a trusted operator runs.
        *topics(
            "operator",
            Operation.WRITE,
            Topic.QUERIES,
            Topic.CANCELLATIONS,
            Topic.DOCUMENTS,
            Topic.PROMPTS,
            Topic.EVAL_CASES,
            Topic.EVAL_RESULTS,
        ),
        *topics(
            "operator",
            Operation.READ,
            Topic.QUERIES,
            Topic.ANSWERS,
            Topic.DOCUMENT_ACKS,
            Topic.PROMPTS,
            Topic.EVAL_RESULTS,
        ),
        *prefix("operator", Resource.TOPIC, everything, Operation.DESCRIBE),
        # Lag exporters (kafka-exporter): topic and group offsets, no records.
        *prefix("monitor", Resource.TOPIC, everything, Operation.DESCRIBE),
        *prefix("monitor", Resource.GROUP, settings.app_id, Operation.DESCRIBE),
    ]


async def admin_client(settings: Settings, *, attempts: int = 20) -> AIOKafkaAdminClient:
    """A started admin client with ``settings``' credentials, retrying while the broker is still coming up."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, client_id="ragstream-admin", **client_options(settings)
    )
    for attempt in range(attempts):
        try:
            await admin.start()
            return admin
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def create_acls(settings: Settings, bindings: Iterable[AclBinding]) -> int:
    """Create ``bindings`` as the admin in ``settings`` (idempotent: an existing ACL is left as it is)."""
    admin = await admin_client(settings)
    count = 0
    try:
        for binding in bindings:
            request = CreateAclsRequest(
                binding.resource,
                binding.name,
                _PREFIXED if binding.prefixed else _LITERAL,
                binding.principal,
                "*",
                binding.operation,
                _ALLOW,
            )
            response = await admin._send_request(request)
            for error_code, message in response.creation_responses:
                if error_code != 0:
                    raise for_code(error_code)(f"creating {binding}: {message}")
            count += 1
    finally:
        await admin.close()
    return count


async def apply_acls(settings: Settings, users: Mapping[str, str] | None = None) -> int:
    """Create every ACL of :func:`acl_bindings`; returns how many bindings were sent."""
    return await create_acls(settings, acl_bindings(settings, users))
