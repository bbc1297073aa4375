"""Keeps a job's status and progress in step with its tasks."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states


async def refresh_job(conn: AsyncConnection, job_id: int, *, progress_only: bool = False) -> None:
    """Recompute the job row from its tasks inside the caller's transaction.

    The job row is locked first: two tasks of one job finishing at once would otherwise each
    read the other as still running and the last writer would leave the job "processing".
    Progress is the mean of the tasks' progress; a failed job shows its last task error.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())
    rows = (await conn.execute(
        select(tasks.c.status, func.count(), func.sum(tasks.c.progress))
        .where(tasks.c.job_id == job_id).group_by(tasks.c.status)
    )).all()
    if not rows:
        return
    total = sum(count for _status, count, _progress in rows)
    progress = sum(progress or 0.0 for _status, _count, progress in rows) / total
    now = utcnow()
    if progress_only:
        await conn.execute(update(jobs).where(jobs.c.id == job_id)
                           .values(progress=progress, updated_at=now))
        return
    status = states.job_status_from_tasks(status for status, _count, _progress in rows)
    error = None
    if status in (states.JOB_FAILED, states.JOB_DEAD):
        error = (await conn.execute(
            select(tasks.c.last_error)
            .where(tasks.c.job_id == job_id, tasks.c.status.in_((states.FAILED, states.DEAD)))
            .order_by(tasks.c.updated_at.desc()).limit(1)
        )).scalar()
    await conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(
            status=status,
            progress=1.0 if status == states.JOB_COMPLETED else progress,
            error=error,
            updated_at=now,
            finished_at=now if status in states.JOB_FINAL else None,
        )
    )


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    rows = (await conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))).all()
    return {status: count for status, count in rows}
