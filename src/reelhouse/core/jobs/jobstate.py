"""Keeps jobs' status and progress in step with their tasks, set-based, and settles a kind's
domain rows when one of its tasks ends without success."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Float, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.jobsql import refresh_jobs_sql
from reelhouse.core.jobs.registry import SettleLookup

log = logging.getLogger("reelhouse.jobs")


async def lock_jobs(conn: AsyncConnection, job_ids: Sequence[int]) -> None:
    """Lock job rows in id order (PostgreSQL; SQLite's writer lock already serialises). Every
    transaction that writes job rows takes them this way before it touches their tasks, so two
    cannot deadlock. NO KEY UPDATE: inserting a new task of the job (a foreign-key KEY SHARE
    lock) does not wait for it."""
    if conn.dialect.name == "postgresql" and job_ids:
        await conn.execute(
            select(jobs.c.id).where(jobs.c.id.in_(sorted(job_ids))).order_by(jobs.c.id).with_for_update(key_share=True)
        )


async def lock_jobs_of_tasks(conn: AsyncConnection, task_ids: Sequence[int]) -> None:
    if conn.dialect.name == "postgresql" and task_ids:
        owners = select(tasks.c.job_id).where(tasks.c.id.in_(list(task_ids)))
        await conn.execute(
            select(jobs.c.id).where(jobs.c.id.in_(owners)).order_by(jobs.c.id).with_for_update(key_share=True)
        )


async def refresh_jobs(conn: AsyncConnection, job_ids: Iterable[int], *, progress_only: bool = False) -> None:
    """Recompute job rows from their tasks inside the caller's transaction.

    The job rows are locked first (in id order): tasks of one job finishing at once would
    otherwise each read the other as still running, and the last writer would leave the job
    "processing". The aggregate then runs as a new statement, with a snapshot taken after the
    lock. Progress is the mean of the tasks' progress.
    """
    ids = sorted(set(job_ids))
    if not ids:
        return
    if progress_only:
        # No lock: progress is a display value, and a lock here (task row first, then job)
        # would invert the order every other transition takes.
        progress = select(func.avg(cast(tasks.c.progress, Float))).where(tasks.c.job_id == jobs.c.id).scalar_subquery()
        await conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(progress=progress, updated_at=db_now()))
        return
    await lock_jobs(conn, ids)
    dialect = conn.dialect.name
    params = (ids,) if dialect == "postgresql" else tuple(ids)
    await conn.exec_driver_sql(refresh_jobs_sql(dialect, len(ids)), params)


async def refresh_job(conn: AsyncConnection, job_id: int, *, progress_only: bool = False) -> None:
    await refresh_jobs(conn, [job_id], progress_only=progress_only)


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    rows = (await conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))).all()
    return dict(rows)


async def settle_ended_task(conn: AsyncConnection, settle_for: SettleLookup | None, task: Any, reason: str) -> None:
    """Run the settle hook of `task`'s kind (a row with kind, job_id and status, just ended)
    in the transaction that ended it, in its own savepoint: a hook that fails is logged and
    undone, and the task's transition commits without it."""
    settle = settle_for(task.kind) if settle_for is not None else None
    if settle is None:
        return
    try:
        async with conn.begin_nested():
            await settle(conn, task.job_id, str(task.status), reason)
    except Exception:
        log.exception("settle hook failed", extra={"job_id": task.job_id, "kind": task.kind, "status": task.status})
