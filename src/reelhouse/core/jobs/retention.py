"""Retention: finished jobs, their tasks and history, old `periodic_runs` rows and expired API
tokens are deleted after their window, so the tables stay bounded.

Windows (RetentionSettings): `JOB_RETENTION` for completed and cancelled jobs,
`JOB_RETENTION_FAILED` (longer) for failed and dead ones, `JOB_RETENTION_IDLE` (short) for
system jobs whose every run said it found nothing to do (`TaskContext.mark_idle`).

Deletes go in small batches, each its own short transaction, and touch only finished rows:
a claim locks queued task rows and their jobs, which a prune never selects, so claims keep
flowing during a prune (bench/jobs.py --prune measures claim latency meanwhile). A job is
deleted only while none of its tasks is open, checked in the deleting statement itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, exists, not_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import api_tokens, jobs, periodic_runs, task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.jobs.settings import RetentionSettings

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext
    from reelhouse.core.runtime import Runtime

PRUNE_KIND = "jobs.prune"
PAUSE_BETWEEN_BATCHES = 0.01  # seconds: lets waiting writers (SQLite's one lock) in between


@dataclass
class PruneReport:
    jobs: int = 0
    tasks: int = 0
    periodic_runs: int = 0
    api_tokens: int = 0
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nothing(self) -> bool:
        return not (self.jobs or self.tasks or self.periodic_runs or self.api_tokens)


def _expired_jobs(conf: RetentionSettings) -> Any:
    ok = (states.JOB_COMPLETED, states.JOB_CANCELLED)
    bad = (states.JOB_FAILED, states.JOB_DEAD)
    busy_or_kept = tasks.c.status.in_((states.QUEUED, states.RUNNING)) | not_(tasks.c.idle)
    idle_system_run = and_(
        jobs.c.system,
        jobs.c.status == states.JOB_COMPLETED,
        jobs.c.finished_at < db_now(-conf.job_retention_idle),
        not_(exists().where(tasks.c.job_id == jobs.c.id, busy_or_kept)),
    )
    return and_(
        jobs.c.finished_at.is_not(None),
        or_(
            and_(jobs.c.status.in_(ok), jobs.c.finished_at < db_now(-conf.job_retention)),
            and_(jobs.c.status.in_(bad), jobs.c.finished_at < db_now(-conf.job_retention_failed)),
            idle_system_run,
        ),
        not_(exists().where(tasks.c.job_id == jobs.c.id, tasks.c.status.in_((states.QUEUED, states.RUNNING)))),
    )


async def _prune_jobs_batch(engine: AsyncEngine, conf: RetentionSettings, report: PruneReport) -> int:
    condition = _expired_jobs(conf)
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            ids = (
                (await conn.execute(select(jobs.c.id).where(condition).order_by(jobs.c.id).limit(conf.prune_batch)))
                .scalars()
                .all()
            )
            if not ids:
                return 0
            batch = and_(jobs.c.id.in_(ids), condition)  # re-checked: a follow-up may have arrived
            doomed = select(jobs.c.id).where(batch)
            doomed_tasks = select(tasks.c.id).where(tasks.c.job_id.in_(doomed))
            await conn.execute(delete(task_attempts).where(task_attempts.c.task_id.in_(doomed_tasks)))
            report.tasks += (await conn.execute(delete(tasks).where(tasks.c.job_id.in_(doomed)))).rowcount
            deleted = (await conn.execute(delete(jobs).where(jobs.c.id.in_(ids), condition))).rowcount
            report.jobs += deleted
            return len(ids)
    finally:
        await conn.close()


async def _prune_periodic_batch(engine: AsyncEngine, conf: RetentionSettings, report: PruneReport) -> int:
    """Rows of past periods; the newest row of each name stays (it is what stops the current
    period from firing twice, however long the period)."""
    newer = aliased(periodic_runs)
    old = (
        select(periodic_runs.c.name, periodic_runs.c.period_start)
        .where(
            periodic_runs.c.created_at < db_now(-conf.job_retention_idle),
            exists().where(newer.c.name == periodic_runs.c.name, newer.c.period_start > periodic_runs.c.period_start),
        )
        .limit(conf.prune_batch)
    )
    async with engine.begin() as conn:
        rows = (await conn.execute(old)).all()
        if not rows:
            return 0
        keys = [(row.name, row.period_start) for row in rows]
        stmt = delete(periodic_runs).where(tuple_(periodic_runs.c.name, periodic_runs.c.period_start).in_(keys))
        report.periodic_runs += (await conn.execute(stmt)).rowcount
        return len(rows)


async def _prune_tokens_batch(engine: AsyncEngine, conf: RetentionSettings, report: PruneReport) -> int:
    expired = select(api_tokens.c.id).where(api_tokens.c.expires_at < db_now(-conf.job_retention))
    async with engine.begin() as conn:
        ids = (await conn.execute(expired.limit(conf.prune_batch))).scalars().all()
        if ids:
            report.api_tokens += (await conn.execute(delete(api_tokens).where(api_tokens.c.id.in_(ids)))).rowcount
        return len(ids)


async def prune(engine: AsyncEngine, conf: RetentionSettings, *, max_batches: int | None = None) -> PruneReport:
    """Delete everything past its window, a batch at a time, until nothing is left."""
    report = PruneReport()
    for step in (_prune_jobs_batch, _prune_periodic_batch, _prune_tokens_batch):
        while max_batches is None or report.batches < max_batches:
            found = await step(engine, conf, report)
            report.batches += 1
            if found < conf.prune_batch:
                break
            await asyncio.sleep(PAUSE_BETWEEN_BATCHES)
    return report


def install(runtime: Runtime) -> None:
    """Register the prune task and its schedule (core's own housekeeping)."""
    conf = runtime.settings.section(RetentionSettings)

    async def prune_task(ctx: TaskContext) -> dict[str, int]:
        report = await prune(ctx.queue.engine, conf)
        if report.nothing:
            await ctx.mark_idle()
        return {
            "jobs": report.jobs,
            "tasks": report.tasks,
            "periodic_runs": report.periodic_runs,
            "api_tokens": report.api_tokens,
        }

    runtime.registry.register(TaskKind(PRUNE_KIND, prune_task, max_attempts=3, concurrency_global=1))
    runtime.periodic.append(
        PeriodicTask("jobs.prune", PRUNE_KIND, every=max(conf.prune_interval, timedelta(seconds=1)))
    )
