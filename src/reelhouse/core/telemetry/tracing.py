"""OpenTelemetry tracing, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Without an endpoint the global tracer is OpenTelemetry's no-op one, so span calls elsewhere
(job runs, `span(...)` in the domains) cost nothing, and no trace context is stored with tasks.

Span names follow vod-tender's observability guide: `http-server` for requests, `processOnce`,
`download` and `upload` for the archive; every span carries the request's or task's
`correlation_id` (the `corr` of the log lines). A task stores the W3C trace context of the span
that enqueued it (`tasks.trace_context`); the worker's span for the run continues that trace, so
one VOD's discovery, download and upload are one trace. Transports that carry a task elsewhere
(NATS messages to remote workers) put the same text in a `traceparent` header
(`inject_headers`) and the remote side continues it (`extract_headers` / `task_context`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from reelhouse.core.telemetry.correlation import current_correlation_id

log = logging.getLogger("reelhouse.telemetry")
tracer = trace.get_tracer("reelhouse")
_PROPAGATOR = TraceContextTextMapPropagator()
MAX_TRACE_CONTEXT = 600  # tasks.trace_context's width; a longer tracestate is dropped


class CorrelationSpanProcessor(SpanProcessor):
    """Stamps every span with the correlation id current when it starts."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        corr = current_correlation_id()
        if corr:
            span.set_attribute("correlation_id", corr)

    def on_end(self, span: ReadableSpan) -> None:
        return None


def _normalise_endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:  # vod-tender's form, `jaeger:4317`
        endpoint = f"http://{endpoint}"
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def setup_tracing(endpoint: str, sample_rate: float, service_name: str = "reelhouse") -> bool:
    if not endpoint:
        return False
    if isinstance(trace.get_tracer_provider(), _sdk_provider_type()):
        return True  # already set up in this process (serve builds one app per process)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=ParentBased(TraceIdRatioBased(sample_rate))
    )
    traces_url = _normalise_endpoint(endpoint)
    provider.add_span_processor(CorrelationSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    trace.set_tracer_provider(provider)
    log.info("tracing enabled", extra={"component": "telemetry", "endpoint": traces_url})
    return True


def _sdk_provider_type() -> type:
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider


def flush_tracing(timeout_millis: int = 10_000) -> None:
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(timeout_millis)


def _server_request_hook(span: Any, scope: dict[str, Any]) -> None:
    if span is not None and span.is_recording() and scope.get("type") == "http":
        span.update_name("http-server")


def instrument_app(app: Any) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="healthz,metrics",
        server_request_hook=_server_request_hook,
        exclude_spans=["receive", "send"],
    )


class CorrelationSpanMiddleware:
    """Inside the correlation-id middleware: puts the request's id on the `http-server` span
    (which starts before the id is known)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            span = trace.get_current_span()
            corr = current_correlation_id()
            if corr and span.is_recording():
                span.set_attribute("correlation_id", corr)
        await self.app(scope, receive, send)


# ---- trace context carried with work ------------------------------------------------------


def current_trace_context() -> str | None:
    """The current span's W3C context as `traceparent[;tracestate]`, or None without a
    recording span (tracing off): what a task stores for its run to continue."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    parent = carrier.get("traceparent")
    if not parent:
        return None
    state = carrier.get("tracestate")
    text = f"{parent};{state}" if state else parent
    return text if len(text) <= MAX_TRACE_CONTEXT else parent


def context_from_text(text: str | None) -> otel_context.Context | None:
    """The parent context stored with a task; None (a new trace) when absent or malformed."""
    if not text:
        return None
    parent, _, state = text.partition(";")
    carrier = {"traceparent": parent.strip()}
    if state:
        carrier["tracestate"] = state.strip()
    extracted = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def inject_headers(headers: MutableMapping[str, str], text: str | None = None) -> MutableMapping[str, str]:
    """Add `traceparent` (and `tracestate`) for `text` (a task's stored context) or, without
    it, for the current span: for message headers (NATS) that carry a task elsewhere."""
    text = text if text is not None else current_trace_context()
    if text:
        parent, _, state = text.partition(";")
        headers["traceparent"] = parent
        if state:
            headers["tracestate"] = state
    return headers


def extract_headers(headers: Mapping[str, str] | None) -> str | None:
    """The `traceparent[;tracestate]` text of message headers, as a task stores it."""
    if not headers:
        return None
    parent = headers.get("traceparent")
    if not parent:
        return None
    state = headers.get("tracestate")
    text = f"{parent};{state}" if state else parent
    return text if context_from_text(text) is not None else None


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A child span of the current one; None-valued attributes are left out."""
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer.start_as_current_span(name, attributes=clean) as current:
        yield current


@contextmanager
def task_context(
    trace_context: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """The span of one task run, continuing the stored trace context when there is one."""
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    parent = context_from_text(trace_context)
    with tracer.start_as_current_span(name, context=parent, attributes=clean) as current:
        yield current
