"""OpenTelemetry tracing, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Without an endpoint the global tracer is OpenTelemetry's no-op one, so span calls elsewhere
(job runs) cost nothing."""

from __future__ import annotations

import logging

from opentelemetry import trace

log = logging.getLogger("reelhouse.telemetry")
tracer = trace.get_tracer("reelhouse")


def setup_tracing(endpoint: str, sample_rate: float, service_name: str = "reelhouse") -> bool:
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_rate)))
    traces_url = endpoint.rstrip("/") + ("" if endpoint.rstrip("/").endswith("/v1/traces") else "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    trace.set_tracer_provider(provider)
    log.info("tracing enabled", extra={"component": "telemetry", "endpoint": traces_url})
    return True


def instrument_app(app) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,metrics")
