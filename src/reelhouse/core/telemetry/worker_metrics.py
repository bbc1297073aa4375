"""`/metrics` for a standalone `reelhouse worker` (METRICS_ADDR): the counters and histograms
of the work it ran (tasks, downloads, uploads, mails, pools) are counted in its own process, so
Prometheus scrapes it next to the API nodes (deploy/prometheus/prometheus.yml, job
`reelhouse-workers`). Database-mirroring gauges stay the API's job."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from reelhouse.config import ConfigError


def start_metrics_listener(addr: str) -> WSGIServer | None:
    if not addr:
        return None
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"METRICS_ADDR: expected host:port, got {addr!r}")
    try:
        server, _thread = start_http_server(int(port_text), addr=host.strip("[]") or "0.0.0.0")
    except OSError as exc:
        raise ConfigError(f"METRICS_ADDR: cannot listen on {addr}: {exc}") from None
    return server
