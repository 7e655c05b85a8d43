"""OpenTelemetry set-up, the Kafka-header trace propagation every stage uses, and the metrics/health endpoint.

One query is one trace: the bridge (or any producer) starts it, each stage continues it from the ``traceparent``
header of the event it consumed and writes its own context into the headers of the events it produces.

Metrics: every long-running process (worker, bridge) installs a ``MeterProvider`` whose Prometheus reader feeds
``GET /metrics`` on its own port (:func:`serve_endpoints`, which also answers ``/healthz`` and ``/readyz`` for
orchestrator probes); with ``otlp_endpoint`` set, spans (and, with ``otlp_metrics``, metrics) go there over OTLP.
Instruments are created on the API's meter at import time anywhere in the code; they start recording once
:func:`configure` has run, and are no-ops in processes that never call it (CLI clients, unit tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context

from infra.settings import Settings

log = logging.getLogger(__name__)

tracer = trace.get_tracer("ragstream")
meter = metrics.get_meter("ragstream")

# Bucket boundaries for latencies in seconds (5 ms .. 5 min, so that an overloaded stage does not pin its p95 to
# the top bucket) and for decode speeds in tokens per second. The SDK's defaults (0 .. 10 000) would put every TTFT
# in one bucket.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"

_configured = False


def configure(settings: Settings, service_name: str) -> None:
    """Install the SDK providers once per process: traces (OTLP when configured) and metrics (Prometheus reader,
    plus OTLP when ``otlp_metrics``)."""
    global _configured
    if _configured:
        return
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": service_name})
    provider = TracerProvider(resource=resource)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=_insecure(settings.otlp_endpoint))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)

    readers: list[MetricReader] = [PrometheusMetricReader()]
    if settings.otlp_endpoint and settings.otlp_metrics:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        pushed = OTLPMetricExporter(endpoint=settings.otlp_endpoint, insecure=_insecure(settings.otlp_endpoint))
        readers.append(PeriodicExportingMetricReader(pushed, export_interval_millis=15_000))
    views = [
        View(instrument_name="*_seconds", aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS_S)),
        View(instrument_name="*_per_second", aggregation=ExplicitBucketHistogramAggregation(RATE_BUCKETS)),
    ]
    metrics.set_meter_provider(MeterProvider(metric_readers=readers, resource=resource, views=views))
    _configured = True


def _insecure(endpoint: str) -> bool:
    return not endpoint.startswith("https://")


def shutdown() -> None:
    """Flush spans still batched (the last query's) before the process exits."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if flush is not None:
        flush()


def context_from_headers(headers: Mapping[str, bytes]) -> Context:
    carrier = {key: value.decode("latin-1") for key, value in headers.items() if key in ("traceparent", "tracestate")}
    return propagate.extract(carrier)


def headers_from_context() -> dict[str, bytes]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key: value.encode("latin-1") for key, value in carrier.items()}


# -- the metrics and health endpoint ---------------------------------------------------------------------------


class Endpoints:
    """``/metrics`` (Prometheus text), ``/healthz`` (the process answers) and ``/readyz`` (``ready()`` is true: the
    worker has loaded its models, the bridge serves sockets), served from a thread so that a scrape never waits
    for the event loop and a probe still answers while the loop is busy."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._answer(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == HEALTH_PATH:
                self._answer(HTTPStatus.OK, b"ok\n")
            elif path == READY_PATH:
                ready = endpoints.ready()
                self._answer(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                             b"ready\n" if ready else b"not ready\n")  # fmt: skip
            else:
                self._answer(HTTPStatus.NOT_FOUND, b"not found: /metrics, /healthz, /readyz\n")

        def _answer(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a line per scrape and probe would drown the log

    return Handler


def serve_endpoints(host: str, port: int, ready: Callable[[], bool]) -> Endpoints | None:
    """Start the endpoint on ``host:port`` (0 = off). A port already in use is logged and skipped: metrics are
    worth less than the process they describe (two local workers on one settings file, for instance)."""
    if port == 0:
        return None
    try:
        endpoints = Endpoints(host, port, ready)
    except OSError as exc:
        log.warning("not serving /metrics on %s:%s: %s", host, port, exc)
        return None
    endpoints.start()
    log.info("serving /metrics, /healthz and /readyz on http://%s:%s", host, endpoints.port)
    return endpoints
