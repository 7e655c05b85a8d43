"""The one typed settings object for every ragstream process.

Values come from ``RAGSTREAM_*`` environment variables (``RAGSTREAM_KAFKA_PORT=29092`` sets ``kafka_port``).
Defaults describe the local development stack that ``ragstream up`` starts; production sets the address
fields (``kafka_bootstrap``, ``redis_url``, ``milvus_uri``, ``triton_grpc_url``) and nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from schemas.topics import Topic, bridge_reply_topic, topic_name

ENV_PREFIX = "RAGSTREAM_"
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration for services, workers, the bridge and the CLI."""

    # Where the local stack keeps data, logs and PID files; survives restarts.
    data_dir: str = ".ragstream"
    # Where downloaded service artifacts (Kafka jars, the Triton server wheel) are cached across checkouts.
    cache_dir: str = "~/.cache/ragstream"
    host: str = "127.0.0.1"

    kafka_version: str = "4.1.0"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "-Xms256m -Xmx768m"
    # Nodes of the local Kafka: 1 (one combined broker+controller) or 3 or more, each a broker and a controller
    # voter (a quorum survives losing a minority). Node n (1-based) listens on kafka_port + 2(n-1), its controller
    # on kafka_controller_port + 2(n-1): 19092/19093, 19094/19095, 19096/19097 by default.
    kafka_brokers: int = 1
    # Replicas of every topic ragstream creates, and how many must have a record before a produce with acks=all is
    # acknowledged. 0 = derived: min(3, kafka_brokers) replicas, and 2 in sync when there are 3 or more (so an
    # acknowledged record survives the loss of any one broker, and producing continues without it), else 1.
    topic_replication_factor: int = 0
    topic_min_insync_replicas: int = 0
    # Set to use an existing cluster instead of the local one.
    kafka_bootstrap: str = ""
    # Kafka security (infra/kafka_security.py, infra/deploy/README.md "Kafka security"). PLAINTEXT is the open local
    # development broker; production uses SASL_SSL (or SASL_PLAINTEXT on a private network) with SCRAM, one user per
    # role (bridge, worker, ingest, operator, and the admin that creates topics and ACLs). The password is a secret.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    # CA bundle that signed the brokers' certificates (SASL_SSL); "" = the system's CAs.
    kafka_ssl_cafile: str = ""
    # The local broker only (`ragstream up kafka` with SASL_PLAINTEXT): SCRAM users created when its storage is
    # formatted, as comma-separated user:password pairs ("bridge:...,worker:..."). kafka_username/kafka_password
    # become its super user (the admin), which also creates the ACLs of the role users.
    kafka_users: str = ""
    topic_prefix: str = "ragstream"
    # Partitions of the high-volume topics; the unit of worker parallelism.
    topic_partitions: int = 4

    redis_port: int = 16379
    redis_url: str = ""

    milvus_port: int = 19530
    milvus_uri: str = ""

    triton_http_port: int = 18000
    triton_grpc_port: int = 18001
    # Triton's own Prometheus endpoint (queue and compute time per model); scraped by the observability part.
    triton_metrics_port: int = 18002
    triton_metrics: bool = True
    triton_grpc_url: str = ""
    # Model repository served by the local Triton; production points Triton at triton_models/production.
    triton_model_repository: str = ""
    pytriton_version: str = "0.7.0"
    # The Triton model ingestion embeds with: the same weights as the query path's "embedder", in instances that
    # yield the CPU to queries (triton_models/cpu/embedder_bulk).
    ingest_embedder_model: str = "embedder_bulk"
    # Comma-separated models Triton loads at start ("*" = every model in the repository).
    triton_load_models: str = "*"
    # Python environment the models run in (see triton_models/cpu/requirements.txt); "" = <repo>/.venv-triton.
    triton_python_env: str = ""

    # Readiness deadlines, seconds.
    start_timeout_s: float = 180.0  # a cold machine loads five models, each importing torch, from a cold disk cache
    stop_timeout_s: float = 20.0

    # Faust worker.
    app_id: str = "ragstream"
    worker_web_port: int = 16066
    # Worker and bridge processes `ragstream up worker bridge` runs on this machine: scale-out tried on one host.
    # Process n > 1 is named worker-n / bridge-n and listens on each of its ports + 10(n-1) (bridge-2: 8775).
    local_workers: int = 1
    local_bridges: int = 1
    # Questions one worker prepares at once (guard, embed, cache, retrieve, rerank, prompt) and answers it streams
    # at once. Prepare is CPU-bound on the worker's host, so a few suffice; generation mostly waits on Triton.
    prepare_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 8
    generate_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 32
    # Lower than Faust's defaults: the pipeline is latency-bound, not throughput-bound (see benchmarks/).
    consumer_fetch_max_wait_ms: int = 10
    producer_linger_ms: int = 0
    # CPU priority a worker of the ingest role gives itself (`ragstream worker --role ingest`): bulk indexing
    # yields the cores to the query path.
    ingest_worker_nice: int = 10
    # Where answers go when a request names no reply topic.
    default_reply_topic: str = ""

    # WebSocket bridge.
    bridge_port: int = 8765
    # Names this instance's reply topic; a restarted bridge keeps it to resume answers ("" = hostname-port).
    bridge_instance: str = ""
    # Comma-separated key:tenant pairs. The default is for local development only; production passes a secret.
    api_keys: str = "dev-key:default"
    bridge_max_connections: int = 1000
    bridge_max_requests_per_connection: int = 16
    # Messages queued for one client before it counts as too slow and is disconnected.
    bridge_send_queue: int = 1024
    # How long answer events are kept (and re-read at start) so a reconnecting client can resume.
    bridge_resume_window_s: float = 300.0
    # Quotas shared by every bridge through Redis (streams/bridge/quotas.py): open connections (WebSockets and API
    # requests in flight) per API key and per tenant, and asks per second (sustained rate and burst) per key and
    # per tenant. A bridge renews its connection leases; a crashed bridge's slots expire after the lease.
    bridge_key_connections: int = 100
    bridge_tenant_connections: int = 1000
    bridge_key_rate: float = 10.0
    bridge_key_burst: int = 20
    bridge_tenant_rate: float = 50.0
    bridge_tenant_burst: int = 100
    bridge_quota_lease_s: float = 30.0
    # A WebSocket that sends nothing and waits for no answer this long is closed (1000, "idle"); 0 = never.
    bridge_idle_timeout_s: float = 600.0
    # Prometheus /metrics, /healthz and /readyz of the worker and of the bridge (0 = off). Distinct ports, since
    # both may run on one host; a container serves either on 9464 (infra/deploy).
    metrics_port: int = 9464
    bridge_metrics_port: int = 9465

    # Query path.
    retrieve_k: int = 20
    rerank_k: int = 5
    search_mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    # Reorder the retrieved candidates with the reranker model before the top rerank_k become the context.
    rerank: bool = True
    # Reranker score below which a passage is not relevant; with none left the answer is the refusal. The CPU
    # reranker scores unrelated text 0.49-0.56 and relevant passages 0.73-0.94 (by hand, 2026-11-24); on the
    # FAQ golden set answerable questions scored >= 0.78 and out-of-corpus ones up to 0.76 (`ragstream eval`).
    min_relevance: float = 0.7
    context_tokens: int = 1500
    cache_enabled: bool = True
    # Cosine similarity a cached question needs (plus an equal negation/number signature) to be reused.
    cache_threshold: float = 0.9
    cache_ttl_s: int = 86400
    # Guardrail policies as JSON: {"default": {...}, "tenants": {"acme": {...}}} (processors/guardrails/policy.py).
    guard_policies: str = ""

    # OTLP/gRPC collector for traces (e.g. http://otel-collector:4317); "" = no export.
    otlp_endpoint: str = ""
    # Also push metrics there. Off by default: Prometheus pulls /metrics, and both at once would double each series.
    otlp_metrics: bool = False
    log_level: str = "info"

    # The local Prometheus server of the observability part (`ragstream up observability`).
    prometheus_port: int = 19090
    prometheus_scrape_interval_s: float = 5.0
    prometheus_retention: str = "7d"

    # Default generation model and limits.
    llm_model: str = "llm_small"
    llm_max_tokens: int = 256
    # Model router (processors/router.py): the two tiers, which router ("feature" or "heuristic"), and per-tenant
    # pins as comma-separated tenant:tier pairs ("acme:large,free:small").
    llm_small_model: str = "llm_small"
    llm_large_model: str = "llm_large"
    router: str = "feature"
    router_overrides: str = ""
    # Models served by OpenAI-compatible servers (vLLM, TGI, llama.cpp's server, a hosted API, another ragstream
    # bridge's /v1) instead of Triton, as JSON {"model name": {"base_url": "http://host:8000/v1", "model": "remote
    # name", "api_key": "...", "extra_body": {...}, "timeout_s": 30, "first_token_timeout_s": 10}}
    # (processors/adapters/openai_compat.py). A tier uses one by naming it: RAGSTREAM_LLM_LARGE_MODEL=<model name>.
    # It holds keys: production passes it as a secret, like api_keys.
    openai_backends: str = ""
    request_timeout_s: float = 30.0

    # How answers are made unless a request says ("generate", "gated" or "extractive": processors/query/requests.py),
    # and how generated answers are checked against their sources ("lexical", or "off").
    answer_strategy: str = "generate"
    claim_checker: str = "lexical"
    # Retrieved passages go through the input guard's injection detector; flagged ones are kept out of the prompt
    # (recorded on the answer's ranking). Off only for a corpus known to discuss attacks, e.g. a security manual.
    screen_passages: bool = True
    # What a request may ask for (checked by the bridge and by the worker: processors/query/requests.py).
    max_question_chars: int = 20_000
    max_answer_tokens: int = 1024
    max_session_id_chars: int = 256
    # Comma-separated extra models clients may name besides the two tiers, e.g. production engines.
    offered_models: str = ""
    # Per-tenant model lists, "acme:llm_small|llm_large;free:llm_small" ("*" for every other tenant).
    tenant_models: str = ""
    # llm_echo (streams its prompt back, sources included) exists for tests and benchmarks only: production sets
    # this to false (infra/deploy), and then no client can name it.
    serve_test_models: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``RAGSTREAM_*`` variables; unknown names fail loudly so typos do not pass silently."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in env.items()
            if key.startswith(ENV_PREFIX) and value != ""
        }
        raw.update(overrides)
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid ragstream settings: {exc}") from None

    def to_env(self) -> dict[str, str]:
        """These settings as ``RAGSTREAM_*`` variables (the inverse of :meth:`from_env`), for child processes."""
        return {
            f"{ENV_PREFIX}{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in msgspec.structs.asdict(self).items()
        }

    def with_changes(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **changes)

    # Derived paths and addresses -------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def adapters_path(self) -> Path:
        """Where ``ragstream finetune`` puts adapters (``<tenant>/<sha16>``) and the models and workers read them."""
        return self.data_path / "adapters"

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser().resolve()

    @property
    def kafka_servers(self) -> str:
        """The bootstrap list: every local node, so a client can start while any one of them is down."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"{self.host}:{self.kafka_node_ports(n)[0]}" for n in range(1, self.kafka_brokers + 1))

    def kafka_node_ports(self, node: int) -> tuple[int, int]:
        """(client port, controller port) of local Kafka node ``node`` (1-based)."""
        offset = 2 * (node - 1)
        return self.kafka_port + offset, self.kafka_controller_port + offset

    @property
    def replication_factor(self) -> int:
        if self.topic_replication_factor:
            return self.topic_replication_factor
        return min(3, self.kafka_brokers) if not self.kafka_bootstrap else 1

    @property
    def min_insync_replicas(self) -> int:
        if self.topic_min_insync_replicas:
            return self.topic_min_insync_replicas
        return 2 if self.replication_factor >= 3 else 1

    @property
    def redis_address(self) -> str:
        return self.redis_url or f"redis://{self.host}:{self.redis_port}/0"

    @property
    def milvus_address(self) -> str:
        return self.milvus_uri or f"http://{self.host}:{self.milvus_port}"

    @property
    def triton_address(self) -> str:
        return self.triton_grpc_url or f"{self.host}:{self.triton_grpc_port}"

    @property
    def model_repository(self) -> Path:
        if self.triton_model_repository:
            return Path(self.triton_model_repository).expanduser().resolve()
        return REPO_ROOT / "triton_models" / "cpu"

    @property
    def triton_python(self) -> Path:
        if self.triton_python_env:
            return Path(self.triton_python_env).expanduser().absolute() / "bin" / "python"
        return REPO_ROOT / ".venv-triton" / "bin" / "python"

    @property
    def reply_topic(self) -> str:
        return self.default_reply_topic or self.topic(Topic.ANSWERS)

    def topic(self, topic: Topic) -> str:
        """The full name of ``topic`` in this deployment (the prefix, then the topic's versioned name)."""
        return topic_name(topic, self.topic_prefix)

    def bridge_reply_topic(self, instance: str) -> str:
        return bridge_reply_topic(self.topic_prefix, instance)
