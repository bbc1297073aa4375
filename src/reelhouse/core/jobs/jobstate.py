"""Keeps a job's status and progress in step with its tasks."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states


async def refresh_job(conn: AsyncConnection, job_id: int, *, progress_only: bool = False) -> None:
    """Recompute the job row from its tasks inside the caller's transaction.

    Progress is the mean of the tasks' progress; the error shown on a failed job is the reason
    of its last failed task, so `jobs show` explains a failure without digging into tasks.
    """
    rows = (await conn.execute(
        select(tasks.c.status, tasks.c.progress, tasks.c.last_error)
        .where(tasks.c.job_id == job_id).order_by(tasks.c.id)
    )).all()
    if not rows:
        return
    progress = sum(r.progress for r in rows) / len(rows)
    now = utcnow()
    if progress_only:
        await conn.execute(update(jobs).where(jobs.c.id == job_id)
                           .values(progress=progress, updated_at=now))
        return
    status = states.job_status_from_tasks(r.status for r in rows)
    errors = [r.last_error for r in rows if r.status in (states.FAILED, states.DEAD) and r.last_error]
    await conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(
            status=status,
            progress=1.0 if status == states.JOB_COMPLETED else progress,
            error=errors[-1] if errors else None,
            updated_at=now,
            finished_at=now if status in states.JOB_FINAL else None,
        )
    )


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    rows = (await conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))).all()
    return {status: count for status, count in rows}
