"""Engine metrics. Counters and histograms are updated where things happen; gauges that
mirror database state (queue depth, tasks by state, workers, breakers) are refreshed from the
database when /metrics is scraped, so every API node reports the same truth."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASK_TRANSITIONS = Counter(
    "reelhouse_task_transitions_total", "Task outcomes by kind", ["kind", "outcome"]
)
TASK_RUN_SECONDS = Histogram(
    "reelhouse_task_run_seconds", "Wall time of one task run, by kind and outcome",
    ["kind", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
)
TASKS = Gauge("reelhouse_tasks", "Tasks in the database by kind and state", ["kind", "state"])
QUEUE_DEPTH = Gauge(
    "reelhouse_queue_depth", "Queued tasks by priority (runnable now or later)", ["priority"]
)
WORKERS_HEALTHY = Gauge("reelhouse_workers_healthy", "Workers with a recent heartbeat")
CIRCUIT_OPEN = Gauge("vod_circuit_open", "1 when the circuit breaker of a scope is open", ["channel"])
CIRCUIT_STATE = Gauge(
    "vod_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["channel"]
)
HTTP_REQUESTS = Counter(
    "reelhouse_http_requests_total", "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "reelhouse_http_request_duration_seconds", "HTTP request latency by route template", ["route"]
)
