"""With OTEL_EXPORTER_OTLP_ENDPOINT set, HTTP requests and task runs are exported as spans to a
real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Collector(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
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
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/t.db"}
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("otel_app.py"))], env=env,
                            capture_output=True, text=True, timeout=120)
    server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    assert _Collector.bodies, "no spans exported"
    paths = {path for path, _ctype, _body in _Collector.bodies}
    payload = b"".join(body for _p, _c, body in _Collector.bodies)
    assert paths == {"/v1/traces"}
    assert b"task traced.kind" in payload  # the job-run span
    assert b"/v1/health" in payload  # the HTTP span
    assert b"reelhouse.task_id" in payload
