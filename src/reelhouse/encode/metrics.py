"""WebEncode's runbook metrics, actually updated (WebEncode registered them and never set them).

Names are promtool-clean: the runbook's `webencode_jobs_total{status}` is a gauge of jobs by
status, and a gauge must not end in `_total`, so it is `webencode_jobs{status}`; the number of
jobs ever submitted is the counter `webencode_jobs_created_total{source}`. Alerts written
against `webencode_jobs_total{status="queued"}` become `webencode_jobs{status="queued"}`
(docs/OPERATIONS.md). Gauges mirror the database, refreshed on each scrape, so every API node
reports the same numbers.
"""

from __future__ import annotations

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

JOBS = Gauge("webencode_jobs", "Encode jobs by status", ["status"])
JOBS_CREATED = Counter("webencode_jobs_created", "Encode jobs submitted, by source kind", ["source"])
TASKS_PROCESSING = Gauge("webencode_tasks_processing", "Encode tasks running now")
WORKERS_HEALTHY = Gauge("webencode_workers_healthy", "Healthy workers able to run encode transcodes")
ASSETS = Gauge("webencode_assets", "Encoded assets by status", ["status"])


async def encode_snapshot(runtime: Runtime) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        by_status = dict((await conn.execute(
            select(jobs.c.status, func.count()).where(jobs.c.kind == JOB_KIND).group_by(jobs.c.status))).all())
        running = (await conn.execute(select(func.count()).select_from(tasks).where(
            tasks.c.kind.startswith(TASK_KIND_PREFIX), tasks.c.status == states.RUNNING))).scalar_one()
        queued = (await conn.execute(select(func.count()).select_from(tasks).where(
            tasks.c.kind.startswith(TASK_KIND_PREFIX), tasks.c.status == states.QUEUED))).scalar_one()
    workers = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    able = [w for w in workers if w["healthy"] and "encode.transcode" in (w["kinds"] or [])]
    return {
        "jobs": {status: int(by_status.get(status, 0)) for status in states.JOB_STATES},
        "tasks_processing": int(running),
        "tasks_queued": int(queued),
        "workers_healthy": len(able),
        "assets": await asset_store.count_by_status(runtime.engine),
    }


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
