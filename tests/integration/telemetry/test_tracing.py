"""With OTEL_EXPORTER_OTLP_ENDPOINT set, HTTP requests and task runs are exported as spans to a
real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        _Collector.bodies.append((self.path, self.headers.get("Content-Type"), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        return


def test_http_and_task_spans_are_exported(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
    }
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("otel_app.py"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert _Collector.bodies, "no spans exported"
    paths = {path for path, _ctype, _body in _Collector.bodies}
    payload = b"".join(body for _p, _c, body in _Collector.bodies)
    assert paths == {"/v1/traces"}
    assert b"task traced.kind" in payload  # the job-run span
    assert b"/v1/health" in payload  # the HTTP span
    assert b"reelhouse.task_id" in payload
    assert b"http-server" in payload  # vod-tender's span name for requests


def test_spans_decoded_by_an_otlp_receiver_carry_correlation_and_continue_through_tasks(tmp_path):
    from tests.otlp_receiver import otlp_receiver

    with otlp_receiver() as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint.removeprefix("http://"),  # vod-tender's `host:port` form
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
        }
        result = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("otel_app.py"))],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    (http,) = receiver.named("http-server")
    assert http.attributes["correlation_id"] == "corr-http-1"
    assert http.attributes.get("http.route") == "/v1/health"
    (enqueuer,) = receiver.named("enqueuer")
    (run,) = receiver.named("task traced.kind")
    assert run.trace_id == enqueuer.trace_id and run.parent_span_id == enqueuer.span_id
    assert run.attributes["correlation_id"] == enqueuer.attributes["correlation_id"] == "corr-enqueue-1"
    assert http.trace_id != run.trace_id


def test_trace_context_text_and_message_headers_round_trip():
    from opentelemetry.sdk.trace import TracerProvider

    from reelhouse.core.telemetry.tracing import context_from_text, extract_headers, inject_headers

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("producer") as producer:
        headers = inject_headers({})
    context = producer.get_span_context()
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    text = extract_headers(headers)
    assert text == headers["traceparent"]
    with tracer.start_as_current_span("consumer", context=context_from_text(text)) as consumer:
        assert consumer.get_span_context().trace_id == context.trace_id
        assert consumer.parent is not None and consumer.parent.span_id == context.span_id
    assert inject_headers({}, "") == {}
    assert extract_headers({"traceparent": "garbage"}) is None and context_from_text("00-zz") is None
