"""WebEncode's runbook metrics, actually updated (WebEncode registered them and never set them).

The runbook's `webencode_jobs_total{status}` is a gauge of current jobs by status under exactly
that name, so seed 002's alert `webencode_jobs_total{status="queued"} > 100` works as written
(`promtool check metrics` would prefer a gauge without `_total`; the operators' name wins).
Jobs submitted are the counter `webencode_jobs_created_total{source}`, and the status changes
recorded once by the event feed (events.py) the counter `webencode_job_status_changes_total
{status}`. Gauges mirror the database, refreshed on each scrape, so every API node reports the
same numbers. `webencode_errors_total{source}` counts failed jobs and failed webhook
deliveries; per worker, `webencode_worker_tasks_total{worker_id, kind, outcome}` in the process
that ran the task.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from sqlalchemy import func, select

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.encode import assets as asset_store
from reelhouse.encode.models import ASSET_ENCODING, ASSET_FAILED, ASSET_READY
from reelhouse.encode.service import JOB_KIND

if TYPE_CHECKING:
    from reelhouse.core.runtime import Runtime

TASK_KIND_PREFIX = "encode."

JOBS = Gauge("webencode_jobs_total", "Encode jobs by status (current, not a counter)", ["status"])
JOBS_CREATED = Counter("webencode_jobs_created", "Encode jobs submitted, by source kind", ["source"])
STATUS_CHANGES = Counter("webencode_job_status_changes", "Encode jobs that reached each status", ["status"])
ERRORS = Counter("webencode_errors", "Encode errors: failed jobs, failed webhook deliveries", ["source"])
WORKER_TASKS = Counter(
    "webencode_worker_tasks", "Encode tasks run by this process's workers", ["worker_id", "kind", "outcome"]
)
TASKS_PROCESSING = Gauge("webencode_tasks_processing", "Encode tasks running now")
WORKERS_HEALTHY = Gauge("webencode_workers_healthy", "Healthy workers able to run encode transcodes")
ASSETS = Gauge("webencode_assets", "Encoded assets by status", ["status"])


async def encode_snapshot(runtime: Runtime) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        by_status: dict[str, int] = dict(
            (
                await conn.execute(
                    select(jobs.c.status, func.count()).where(jobs.c.kind == JOB_KIND).group_by(jobs.c.status)
                )
            ).all()
        )
        running = (
            await conn.execute(
                select(func.count())
                .select_from(tasks)
                .where(tasks.c.kind.startswith(TASK_KIND_PREFIX), tasks.c.status == states.RUNNING)
            )
        ).scalar_one()
        queued = (
            await conn.execute(
                select(func.count())
                .select_from(tasks)
                .where(tasks.c.kind.startswith(TASK_KIND_PREFIX), tasks.c.status == states.QUEUED)
            )
        ).scalar_one()
    workers = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    able = [w for w in workers if w["healthy"] and "encode.transcode" in (w["kinds"] or [])]
    return {
        "jobs": {status: int(by_status.get(status, 0)) for status in states.JOB_STATES},
        "tasks_processing": int(running),
        "tasks_queued": int(queued),
        "workers_healthy": len(able),
        "assets": await asset_store.count_by_status(runtime.engine),
    }


async def count_event(event: dict[str, Any]) -> None:
    """An event this node recorded (events.py listener)."""
    data = event["data"]
    if event["event_type"].startswith("job.") and "status" in data:
        STATUS_CHANGES.labels(data["status"]).inc()
        if data["status"] in (states.JobStatus.FAILED, states.JobStatus.DEAD):
            ERRORS.labels("job").inc()


def counted(handler: Any, kind: str) -> Any:
    """Wrap a task handler so the worker that runs it counts the outcome."""

    async def run(ctx: Any) -> Any:
        try:
            result = await handler(ctx)
        except BaseException as exc:
            WORKER_TASKS.labels(
                ctx.owner, kind, "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            ).inc()
            raise
        WORKER_TASKS.labels(ctx.owner, kind, "succeeded").inc()
        return result

    return run


async def refresh_metrics(runtime: Runtime) -> None:
    snap = await encode_snapshot(runtime)
    # Every status is always exported (0 included) so alert expressions never see "no data".
    for status, count in snap["jobs"].items():
        JOBS.labels(status).set(count)
    TASKS_PROCESSING.set(snap["tasks_processing"])
    WORKERS_HEALTHY.set(snap["workers_healthy"])
    for status in (ASSET_ENCODING, ASSET_READY, ASSET_FAILED):
        ASSETS.labels(status).set(snap["assets"].get(status, 0))


async def encode_status(runtime: Runtime) -> dict[str, Any]:
    """The `encode` section of /status and /admin/monitor."""
    return {"encode": await encode_snapshot(runtime)}
