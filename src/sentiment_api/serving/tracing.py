"""Optional OpenTelemetry tracing: one server span per request, exported over OTLP/HTTP.

Only built when an OTLP endpoint is configured; OpenTelemetry is imported then and not before, so the
serving install does not need it (it is the ``otel`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sentiment_api.core.extras import require


class Tracing:
    """A tracer provider with a batching OTLP exporter, and a span per request."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        require("opentelemetry.sdk")
        exporter_module: Any = require("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind

        self._kind = SpanKind.SERVER
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        exporter = exporter_module.OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("sentiment_api")

    @contextmanager
    def span(self, name: str) -> Iterator[Any]:
        """A server span around one request."""
        with self.tracer.start_as_current_span(name, kind=self._kind) as active:
            yield active

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self.provider.shutdown()
