"""Engine metrics. Counters and histograms are updated where things happen; gauges that
mirror database state (queue depth, tasks by state, workers, breakers) are refreshed from the
database when /metrics is scraped, so every API node reports the same truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram


def _registered(cls: Any, lookup: str, *args: Any, **kwargs: Any) -> Any:
    # A module can be imported twice in one process (tests in importlib mode, reloads) and some
    # metrics are shared by several modules; a second registration of a name would raise, so
    # the collector already registered under that name is reused.
    existing = REGISTRY._names_to_collectors.get(lookup)
    return existing if existing is not None else cls(*args, **kwargs)


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """The counter `name` (written with its `_total` suffix, as dashboards query it)."""
    base = name.removesuffix("_total")
    found: Counter = _registered(Counter, f"{base}_total", base, documentation, list(labels))
    return found


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    found: Gauge = _registered(Gauge, name, name, documentation, list(labels))
    return found


def histogram(
    name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS
) -> Histogram:
    found: Histogram = _registered(Histogram, f"{name}_bucket", name, documentation, list(labels), buckets=buckets)
    return found


TASK_TRANSITIONS = Counter("reelhouse_task_transitions_total", "Task outcomes by kind", ["kind", "outcome"])
TASK_RUN_SECONDS = Histogram(
    "reelhouse_task_run_seconds",
    "Wall time of one task run, by kind and outcome",
    ["kind", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
)
TASKS = Gauge("reelhouse_tasks", "Tasks in the database by kind and state", ["kind", "state"])
QUEUE_DEPTH = Gauge("reelhouse_queue_depth", "Queued tasks by priority (runnable now or later)", ["priority"])
WORKERS_HEALTHY = Gauge("reelhouse_workers_healthy", "Workers with a recent heartbeat")
CIRCUIT_OPEN = Gauge("vod_circuit_open", "1 when the circuit breaker of a scope is open", ["channel"])
CIRCUIT_STATE = Gauge("vod_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["channel"])
HTTP_REQUESTS = Counter(
    "reelhouse_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram("reelhouse_http_request_duration_seconds", "HTTP request latency by route template", ["route"])
# vod-tender's names (seed 003). Read from the live connection pools of this process when
# /metrics is rendered (`core.db.engine` registers each engine it creates), so `in_use` is
# exact at scrape time rather than a sample of the last refresh. Size is the capacity:
# pool_size + max_overflow (what "exhausted" is measured against).
DB_POOL_SIZE = Gauge("database_connection_pool_size", "Database connections the pools of this process may open")
DB_POOL_IN_USE = Gauge("database_connection_pool_in_use", "Database connections checked out of the pools now")
