"""OpenTelemetry set-up and the Kafka-header trace propagation every stage uses.

One query is one trace: the bridge (or any producer) starts it, each stage continues it from the ``traceparent``
header of the event it consumed and writes its own context into the headers of the events it produces.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context

from infra.settings import Settings

tracer = trace.get_tracer("ragstream")
meter = metrics.get_meter("ragstream")

stage_duration = meter.create_histogram(
    "ragstream_stage_duration", unit="s", description="Time a stage spent on one event"
)
stage_errors = meter.create_counter("ragstream_stage_errors", description="Events a stage failed on")
dead_letters = meter.create_counter("ragstream_dead_letters", description="Events written to the dead-letter topic")

_configured = False


def configure(settings: Settings, service_name: str) -> None:
    """Install the SDK providers once per process; exporters only where configured."""
    global _configured
    if _configured:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": service_name})
    provider = TracerProvider(resource=resource)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


def context_from_headers(headers: Mapping[str, bytes]) -> Context:
    carrier = {key: value.decode("latin-1") for key, value in headers.items() if key in ("traceparent", "tracestate")}
    return propagate.extract(carrier)


def headers_from_context() -> dict[str, bytes]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key: value.encode("latin-1") for key, value in carrier.items()}
