"""`/status`, `/admin/monitor`, `/metrics` and `/v1/workers`: what the system is doing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import func, select

from reelhouse.config import format_duration
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.circuit import CLOSED, STATE_CODES
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.core.security.http_auth import require_admin
from reelhouse.core.telemetry import metrics

router = APIRouter(tags=["status"])
EMA_KEYS = ["avg_download_ms", "avg_upload_ms", "avg_total_ms"]


async def engine_snapshot(runtime) -> dict[str, Any]:
    engine = runtime.engine
    async with engine.connect() as conn:
        job_counts = dict((await conn.execute(
            select(jobs.c.status, func.count()).group_by(jobs.c.status))).all())
        by_priority = (await conn.execute(
            select(tasks.c.priority, func.count()).where(tasks.c.status == states.QUEUED)
            .group_by(tasks.c.priority).order_by(tasks.c.priority.desc()))).all()
        by_kind_state = (await conn.execute(
            select(tasks.c.kind, tasks.c.status, func.count()).group_by(tasks.c.kind, tasks.c.status))).all()
    breakers = await runtime.breaker.all_states()
    kv_values = await runtime.kv.get_many(EMA_KEYS + ["job_vod_process_last", "last_process_run"])
    return {"job_counts": job_counts, "by_priority": by_priority, "by_kind_state": by_kind_state,
            "breakers": breakers, "kv": kv_values}


def _worst_breaker(breakers) -> Any:
    return max(breakers, key=lambda b: STATE_CODES[b.state], default=None)


@router.get("/status", summary="Counts, queue, circuit breakers, moving averages")
async def status(request: Request) -> dict[str, Any]:
    runtime = request.app.state.runtime
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
            "scopes": [{"scope": b.scope, "state": b.state, "failures": b.failures,
                        "open_until": b.open_until.isoformat() if b.open_until else None}
                       for b in snap["breakers"]],
            "failure_threshold": settings.jobs.circuit_failure_threshold,
            "open_cooldown": format_duration(settings.jobs.circuit_open_cooldown),
        },
        "last_process_run": snap["kv"].get("job_vod_process_last") or snap["kv"].get("last_process_run"),
    }
    for key in EMA_KEYS:
        body[key] = int(snap["kv"][key]) if key in snap["kv"] else None
    for provider in runtime.status_providers:
        body.update(await provider(runtime))
    return body


@router.get("/admin/monitor", summary="Extended internal stats (admin)")
async def admin_monitor(request: Request, _principal=Depends(require_admin)) -> dict[str, Any]:
    runtime = request.app.state.runtime
    body = await status(request)
    body["workers"] = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    async with runtime.engine.connect() as conn:
        oldest = (await conn.execute(
            select(tasks.c.id, tasks.c.kind, tasks.c.created_at).where(tasks.c.status == states.QUEUED)
            .order_by(tasks.c.created_at).limit(1))).first()
    body["oldest_pending"] = ({"task_id": oldest.id, "kind": oldest.kind,
                               "created_at": oldest.created_at.isoformat()} if oldest else None)
    body["domains"] = runtime.domains
    body["generated_at"] = utcnow().isoformat()
    return body


@router.get("/v1/workers", summary="Workers: capabilities, heartbeat, current job, health")
async def v1_workers(request: Request) -> list[dict[str, Any]]:
    runtime = request.app.state.runtime
    listed = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    task_ids = [w["current_task_ids"][0] for w in listed if w["current_task_ids"]]
    if task_ids:
        async with runtime.engine.connect() as conn:
            job_of = dict((await conn.execute(select(tasks.c.id, tasks.c.job_id)
                                              .where(tasks.c.id.in_(task_ids)))).all())
        for worker in listed:
            ids = worker["current_task_ids"]
            worker["current_job"] = job_of.get(ids[0]) if ids else None
    return listed


async def refresh_gauges(runtime) -> None:
    """Mirror database state into gauges just before a scrape."""
    snap = await engine_snapshot(runtime)
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


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus_metrics(request: Request) -> Response:
    runtime = request.app.state.runtime
    await refresh_gauges(runtime)
    for refresh in runtime.metric_refreshers:
        await refresh(runtime)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
