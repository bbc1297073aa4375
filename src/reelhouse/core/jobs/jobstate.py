"""Keeps jobs' status and progress in step with their tasks, set-based."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Float, and_, case, cast, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states


def _any_task(job_id_col, *statuses: str):
    return exists().where(tasks.c.job_id == job_id_col, tasks.c.status.in_(statuses))


def _status_expression():
    """SQL form of `states.job_status_from_tasks`: unfinished work wins over any outcome,
    then the worst outcome wins."""
    finished = (states.SUCCEEDED, states.FAILED, states.DEAD, states.CANCELLED)
    job = jobs.c.id
    return case(
        (_any_task(job, states.RUNNING), states.JOB_PROCESSING),
        (and_(_any_task(job, states.QUEUED), _any_task(job, *finished)), states.JOB_PROCESSING),
        (_any_task(job, states.QUEUED), states.JOB_QUEUED),
        (_any_task(job, states.FAILED), states.JOB_FAILED),
        (_any_task(job, states.DEAD), states.JOB_DEAD),
        (_any_task(job, states.CANCELLED), states.JOB_CANCELLED),
        else_=states.JOB_COMPLETED,
    )


async def lock_jobs(conn: AsyncConnection, job_ids: Sequence[int]) -> None:
    """Lock job rows in id order (PostgreSQL; SQLite's writer lock already serializes). Every
    transaction that writes job rows takes them this way first, so two cannot deadlock."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(jobs.c.id).where(jobs.c.id.in_(job_ids)).order_by(jobs.c.id).with_for_update())


async def refresh_jobs(conn: AsyncConnection, job_ids: Iterable[int], *, progress_only: bool = False) -> None:
    """Recompute job rows from their tasks inside the caller's transaction.

    The job rows are locked first (in id order, so two transactions cannot deadlock): tasks of
    one job finishing at once would otherwise each read the other as still running, and the
    last writer would leave the job "processing". The aggregate UPDATE then runs with a
    snapshot taken after the lock. Progress is the mean of the tasks' progress.
    """
    ids = sorted(set(job_ids))
    if not ids:
        return
    await lock_jobs(conn, ids)
    progress = (select(func.avg(cast(tasks.c.progress, Float))).where(tasks.c.job_id == jobs.c.id)
                .scalar_subquery())
    now = utcnow()
    if progress_only:
        await conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(progress=progress, updated_at=now))
        return
    status = _status_expression()
    last_error = (select(tasks.c.last_error)
                  .where(tasks.c.job_id == jobs.c.id, tasks.c.status.in_((states.FAILED, states.DEAD)))
                  .order_by(tasks.c.updated_at.desc()).limit(1).scalar_subquery())
    final = case((status.in_(list(states.JOB_FINAL)), now), else_=None)
    await conn.execute(
        update(jobs).where(jobs.c.id.in_(ids)).values(
            status=status,
            progress=case((status == states.JOB_COMPLETED, 1.0), else_=func.coalesce(progress, 0.0)),
            error=last_error,
            updated_at=now,
            finished_at=final,
        )
    )


async def refresh_job(conn: AsyncConnection, job_id: int, *, progress_only: bool = False) -> None:
    await refresh_jobs(conn, [job_id], progress_only=progress_only)


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    rows = (await conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))).all()
    return {status: count for status, count in rows}
