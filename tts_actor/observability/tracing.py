"""OpenTelemetry tracing: spans around downloads, loads and synthesis.

Exported over OTLP/HTTP when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, so Jaeger can take it; a no-op
provider otherwise. Trace context crosses NATS in message headers (W3C
``traceparent``), injected by the client and extracted by the service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor

TRACER_NAME = "tts_actor"
_configured = False


def setup_tracing(service_name: str = "tts-actor", extra_processor: SpanProcessor | None = None) -> bool:
    """Install a tracer provider once; returns whether spans are exported over OTLP."""
    global _configured
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if _configured:
        return exporting
    if not exporting and extra_processor is None:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    _configured = True
    return exporting


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context, for an outgoing NATS message."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a NATS message's headers carry (empty when none)."""
    return propagate.extract(dict(headers or {}))
