# Over 400 lines: /status, /admin/monitor, /metrics and /v1/workers read the same summary.
"""`/status`, `/admin/monitor`, `/metrics` and `/v1/workers`: what the system is doing.

Anonymous callers may read `/status`, `/metrics` and `/v1/workers` (the runbooks' monitors do),
unless `REQUIRE_AUTH_FOR_READS` is set. What they see holds no file paths, hostnames or pids,
and costs no database query: `StatusCache` refreshes the values behind `/status` and the gauges
of `/metrics` every `METRICS_REFRESH_INTERVAL` in the background (one refresh at a time, however
many scrapers), and both routes serve what it last computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from reelhouse import __version__
from reelhouse.config import format_duration
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import Admin, Operator, PublicReader, RuntimeDep
from reelhouse.core.http.errors import errors
from reelhouse.core.jobs import states
from reelhouse.core.jobs.circuit import CLOSED, STATE_CODES
from reelhouse.core.jobs.workers_table import list_workers, request_drain
from reelhouse.core.runtime import Runtime
from reelhouse.core.security import audit
from reelhouse.core.telemetry import metrics

log = logging.getLogger("reelhouse.status")
router = APIRouter(tags=["status"])
AUDIT_ROWS = Gauge("reelhouse_audit_log_rows", "Rows in the audit chain at its sealed head")
AUDIT_HEAD = Gauge(
    "reelhouse_audit_log_head", "The audit chain's sealed head (value 1; the hash is the label)", ["head"]
)
EMA_KEYS = ["avg_download_ms", "avg_upload_ms", "avg_total_ms"]


async def engine_snapshot(runtime: Runtime) -> dict[str, Any]:
    engine = runtime.engine
    async with engine.connect() as conn:
        job_counts: dict[str, int] = dict(
            (await conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))).all()
        )
        by_priority = (
            await conn.execute(
                select(tasks.c.priority, func.count())
                .where(tasks.c.status == states.QUEUED)
                .group_by(tasks.c.priority)
                .order_by(tasks.c.priority.desc())
            )
        ).all()
        by_kind_state = (
            await conn.execute(
                select(tasks.c.kind, tasks.c.status, func.count()).group_by(tasks.c.kind, tasks.c.status)
            )
        ).all()
    breakers = await runtime.breaker.all_states()
    kv_values = await runtime.kv.get_many([*EMA_KEYS, "job_vod_process_last", "last_process_run"])
    return {
        "job_counts": job_counts,
        "by_priority": by_priority,
        "by_kind_state": by_kind_state,
        "breakers": breakers,
        "kv": kv_values,
    }


def _worst_breaker(breakers: list[Any]) -> Any:
    return max(breakers, key=lambda b: STATE_CODES[b.state], default=None)


async def status_summary(runtime: Runtime) -> dict[str, Any]:
    """The `/status` body (`reelhouse status` prints the same), computed now."""
    body, _snap = await _status_and_snapshot(runtime)
    return body


async def compute_status(runtime: Runtime) -> dict[str, Any]:
    """The `/status` body, and the gauges of `/metrics` set from the same snapshot."""
    body, snap = await _status_and_snapshot(runtime)
    await _set_gauges(runtime, snap)
    for refresh in runtime.metric_refreshers:
        await refresh(runtime)
    return body


async def _status_and_snapshot(runtime: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
    snap = await engine_snapshot(runtime)
    counts = snap["job_counts"]
    worst = _worst_breaker(snap["breakers"])
    settings = runtime.settings
    body: dict[str, Any] = {
        "pending": counts.get(states.JOB_QUEUED, 0) + counts.get(states.JOB_PROCESSING, 0),
        "errored": counts.get(states.JOB_FAILED, 0) + counts.get(states.JOB_DEAD, 0),
        "processed": counts.get(states.JOB_COMPLETED, 0),
        "jobs_by_status": counts,
        "queue_depth": sum(count for _p, count in snap["by_priority"]),
        "queue_by_priority": [{"priority": p, "count": c} for p, c in snap["by_priority"]],
        "circuit_state": worst.state if worst else CLOSED,
        "circuit_failures": worst.failures if worst else 0,
        "circuit_open_until": worst.open_until.isoformat() if worst and worst.open_until else None,
        "circuit_breaker": {
            "state": worst.state if worst else CLOSED,
            "scopes": [
                {
                    "scope": b.scope,
                    "state": b.state,
                    "failures": b.failures,
                    "open_until": b.open_until.isoformat() if b.open_until else None,
                }
                for b in snap["breakers"]
            ],
            "failure_threshold": settings.jobs.circuit_failure_threshold,
            "open_cooldown": format_duration(settings.jobs.circuit_open_cooldown),
        },
        "last_process_run": snap["kv"].get("job_vod_process_last") or snap["kv"].get("last_process_run"),
    }
    for key in EMA_KEYS:
        body[key] = int(snap["kv"][key]) if key in snap["kv"] else None
    for provider in runtime.status_providers:
        body.update(await provider(runtime))
    return body, snap


class StatusCache:
    """The last computed `/status` body (and, as a side effect, the gauges of `/metrics`).

    `get()` serves the cached body while it is younger than twice the interval (the background
    loop keeps it so); an older one (no loop running: API-only apps, tests) or an interval of 0
    refreshes first. Refreshes are single-flight: concurrent readers share one."""

    def __init__(self, runtime: Runtime, interval: float) -> None:
        self.runtime = runtime
        self.interval = interval
        self._body: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def refresh(self) -> dict[str, Any]:
        started = self.refreshes
        async with self._lock:
            if self.refreshes == started or self._body is None:  # nobody refreshed while we waited
                self._body = await compute_status(self.runtime)
                self._at = time.monotonic()
                self.refreshes += 1
            return self._body

    async def get(self) -> dict[str, Any]:
        fresh_enough = self._body is not None and time.monotonic() - self._at < max(self.interval * 2, 0.0)
        if fresh_enough and self.interval > 0:
            assert self._body is not None
            return self._body
        return await self.refresh()


async def refresh_loop(cache: StatusCache, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await cache.refresh()
        except Exception:  # a database blip must not end the loop; the next round retries
            log.warning("status/metrics refresh failed", exc_info=True, extra={"component": "status"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(cache.interval, 1.0))


async def export_audit_head(engine: Any, every: timedelta, stop: asyncio.Event) -> None:
    """Publish the audit chain's sealed head (log line and gauges) so an operator can keep it
    elsewhere and later run `reelhouse admin audit verify --expect-head --expect-count`."""
    while not stop.is_set():
        try:
            head = await audit.current_head(engine)
            AUDIT_ROWS.set(head.count)
            AUDIT_HEAD.clear()
            AUDIT_HEAD.labels(head.head).set(1)
            log.info(
                "audit head %s at row %d",
                head.head,
                head.count,
                extra={"component": "audit", "audit_head": head.head, "audit_rows": head.count},
            )
        except Exception:
            log.warning("could not read the audit head", exc_info=True, extra={"component": "audit"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(every.total_seconds(), 1.0))


def status_cache(request: Request) -> StatusCache:
    cache: StatusCache | None = getattr(request.app.state, "status_cache", None)
    if cache is None:
        cache = request.app.state.status_cache = StatusCache(request.app.state.runtime, 0)
    return cache


_HOSTNAME = socket.gethostname()


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """Anonymous view: the data directory's absolute path and this host's name replaced."""
    if isinstance(value, str):
        for secret, replacement in zip(secrets, ("<data_dir>", "<host>"), strict=False):
            if secret and secret in value:
                value = value.replace(secret, replacement)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


class QueueLevel(BaseModel):
    priority: int
    count: int


class BreakerScope(BaseModel):
    scope: str
    state: str
    failures: int
    open_until: str | None


class BreakerSummary(BaseModel):
    state: str
    scopes: list[BreakerScope]
    failure_threshold: int
    open_cooldown: str


class StatusBody(BaseModel):
    """vod-tender's `/status` fields, plus one section per domain (e.g. `encode`, `chat`)."""

    model_config = ConfigDict(extra="allow")

    pending: int
    errored: int
    processed: int
    jobs_by_status: dict[str, int]
    queue_depth: int
    queue_by_priority: list[QueueLevel]
    circuit_state: str
    circuit_failures: int
    circuit_open_until: str | None
    circuit_breaker: BreakerSummary
    last_process_run: str | None
    avg_download_ms: int | None
    avg_upload_ms: int | None
    avg_total_ms: int | None


@router.get("/status", response_model=StatusBody, responses=errors(401), summary="Counts, queue, circuit breakers")
async def status(request: Request, runtime: RuntimeDep, caller: PublicReader) -> dict[str, Any]:
    body = await status_cache(request).get()
    if caller is None:
        body = _scrub(body, (str(runtime.settings.server.data_dir.resolve()), _HOSTNAME))
    return body


class OldestPending(BaseModel):
    task_id: int
    kind: str
    created_at: str


class WorkerView(BaseModel):
    """One worker. Anonymous callers get `id` as a pseudonym and no hostname or pid."""

    id: str
    hostname: str | None = None
    pid: int | None = None
    capabilities: list[str]
    kinds: list[str]
    status: str
    current_task_ids: list[int]
    current_job: int | None = Field(None, description="job of the first task the worker runs")
    started_at: str
    last_heartbeat: str
    healthy: bool
    is_healthy: bool | None = Field(None, description="WebEncode's name for healthy")
    current_task_id: str | None = Field(None, description="WebEncode's: the first task the worker runs")
    transport: str = Field("database", description="database (claims from SQL) or nats (remote, no database)")
    version: str | None = None
    info: dict[str, Any] = Field(default_factory=dict, description="cpu_count, gpu")
    drain_requested: bool = False


class MonitorBody(StatusBody):
    workers: list[WorkerView]
    oldest_pending: OldestPending | None
    domains: list[str]
    generated_at: str


@router.get("/admin/monitor", response_model=MonitorBody, summary="Extended internal stats (admin)")
async def admin_monitor(request: Request, runtime: RuntimeDep, _principal: Admin) -> dict[str, Any]:
    body = dict(await status_cache(request).refresh())
    body["workers"] = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    async with runtime.engine.connect() as conn:
        oldest = (
            await conn.execute(
                select(tasks.c.id, tasks.c.kind, tasks.c.created_at)
                .where(tasks.c.status == states.QUEUED)
                .order_by(tasks.c.created_at)
                .limit(1)
            )
        ).first()
    body["oldest_pending"] = (
        {"task_id": oldest.id, "kind": oldest.kind, "created_at": oldest.created_at.isoformat()} if oldest else None
    )
    body["domains"] = runtime.domains
    body["generated_at"] = utcnow().isoformat()
    return body


def _pseudonym(worker_id: str) -> str:
    return "w-" + hashlib.sha256(worker_id.encode()).hexdigest()[:12]


@router.get(
    "/v1/workers",
    response_model=list[WorkerView],
    responses=errors(401),
    summary="Workers: capabilities, heartbeat, current job, health (hostnames and pids to signed-in callers)",
)
async def v1_workers(runtime: RuntimeDep, caller: PublicReader) -> list[dict[str, Any]]:
    listed = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    task_ids = [w["current_task_ids"][0] for w in listed if w["current_task_ids"]]
    if task_ids:
        async with runtime.engine.connect() as conn:
            job_of = dict(
                (await conn.execute(select(tasks.c.id, tasks.c.job_id).where(tasks.c.id.in_(task_ids)))).all()
            )
        for worker in listed:
            ids = worker["current_task_ids"]
            worker["current_job"] = job_of.get(ids[0]) if ids else None
    for worker in listed:  # WebEncode's names beside reelhouse's
        ids = worker["current_task_ids"]
        worker.setdefault("is_healthy", worker["healthy"])
        worker.setdefault("current_task_id", str(ids[0]) if ids else None)
        worker.setdefault("version", worker.get("version") or __version__)
    if caller is None:
        for worker in listed:
            worker.update(id=_pseudonym(worker["id"]), hostname=None, pid=None)
    return listed


class DrainRequested(BaseModel):
    id: str
    drain_requested: bool


WorkerId = Annotated[str, Path(min_length=1, max_length=255)]


@router.post(
    "/v1/workers/{worker_id}/drain",
    response_model=DrainRequested,
    responses=errors(404),
    summary="Drain a worker: it finishes its current tasks and takes no more",
)
async def drain_worker(worker_id: WorkerId, runtime: RuntimeDep, principal: Operator) -> DrainRequested:
    # Database workers read the flag with their heartbeat; NATS workers get it from the
    # kernel, which copies it into the control bucket (core/jobs/remote/kernel.py).
    if not await request_drain(runtime.engine, worker_id):
        raise HTTPException(404, f"worker {worker_id[:64]!r} not found")
    log.info("drain requested for worker %s by %s", worker_id, principal.name)
    return DrainRequested(id=worker_id, drain_requested=True)


async def _set_gauges(runtime: Runtime, snap: dict[str, Any]) -> None:
    """Mirror database state into gauges."""
    metrics.TASKS.clear()
    for kind, state, count in snap["by_kind_state"]:
        metrics.TASKS.labels(kind, state).set(count)
    metrics.QUEUE_DEPTH.clear()
    for priority, count in snap["by_priority"]:
        metrics.QUEUE_DEPTH.labels(str(priority)).set(count)
    metrics.CIRCUIT_OPEN.clear()
    metrics.CIRCUIT_STATE.clear()
    for breaker in snap["breakers"]:
        metrics.CIRCUIT_OPEN.labels(breaker.scope).set(1 if breaker.state == "open" else 0)
        metrics.CIRCUIT_STATE.labels(breaker.scope).set(STATE_CODES[breaker.state])
    if not snap["breakers"]:
        metrics.CIRCUIT_OPEN.labels("").set(0)
        metrics.CIRCUIT_STATE.labels("").set(0)
    workers = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    metrics.WORKERS_HEALTHY.set(sum(1 for w in workers if w["healthy"]))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}, **errors(401)},
    summary="Prometheus metrics (values refreshed in the background)",
)
async def prometheus_metrics(request: Request, _caller: PublicReader) -> Response:
    await status_cache(request).get()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
