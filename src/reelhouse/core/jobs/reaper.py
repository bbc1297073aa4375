"""Tasks whose worker vanished: their lease expired by the database's clock.

A lost run is not a failed attempt. It is counted in `lost_attempts` against its own bound,
so the worker of a task's last allowed attempt dying after the work was done does not make the
task dead: the rerun finds the finished work (handlers are idempotent) and succeeds. Locks are
taken in the engine's order (jobs by id, then tasks) so the reaper cannot deadlock a completion.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.jobstate import lock_jobs, refresh_jobs, settle_ended_task
from reelhouse.core.jobs.registry import SettleLookup


async def reap_expired_leases(engine: AsyncEngine, settle_for: SettleLookup | None = None) -> int:
    """Return tasks whose worker vanished (lease expired by the database's clock) to the
    queue, or end them.

    A lost run is not a failed attempt: it is counted in `lost_attempts` against its own
    bound (`max_lost_attempts`), so a task whose worker died after finishing the work is
    run again, finds its work done and succeeds. A task that keeps killing its worker ends
    dead at that bound. A task whose cancel was requested ends cancelled. A task that ends
    is settled in the same transaction by its kind's hook (`settle_for(kind)`).
    """
    expired = and_(tasks.c.status == states.RUNNING, tasks.c.lease_expires_at < db_now())
    async with engine.connect() as conn:
        candidates = (await conn.execute(select(tasks.c.job_id).where(expired).distinct())).scalars().all()
    if not candidates:
        return 0
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            await lock_jobs(conn, list(candidates))
            query = select(
                tasks.c.id,
                tasks.c.job_id,
                tasks.c.fence,
                tasks.c.attempts,
                tasks.c.lease_owner,
                tasks.c.started_at,
                tasks.c.lost_attempts,
                tasks.c.max_lost_attempts,
                tasks.c.cancel_requested,
            ).where(expired, tasks.c.job_id.in_(list(candidates)))
            if engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await conn.execute(query)).all()
            for row in rows:
                await _requeue_lost(conn, row, settle_for)
            await refresh_jobs(conn, {row.job_id for row in rows})
            return len(rows)
    finally:
        await conn.close()


async def _requeue_lost(conn: AsyncConnection, row: Any, settle_for: SettleLookup | None) -> None:
    lost = row.lost_attempts + 1
    if row.cancel_requested:
        status, error = states.CANCELLED, "cancelled (its worker was lost)"
    elif lost >= row.max_lost_attempts:
        status, error = states.DEAD, f"lease expired: worker lost {lost} times (max_lost_attempts)"
    else:
        status, error = states.QUEUED, f"lease expired: worker lost ({lost} of {row.max_lost_attempts}); requeued"
    final = status in states.TASK_FINAL
    ended = await conn.execute(
        update(tasks)
        .where(tasks.c.id == row.id, tasks.c.fence == row.fence, tasks.c.status == states.RUNNING)
        .values(
            status=status,
            lease_owner=None,
            lease_expires_at=None,
            last_error=error,
            error_class="lease",
            attempts=tasks.c.attempts - 1,
            lost_attempts=lost,
            updated_at=db_now(),
            run_after=db_now(),
            finished_at=db_now() if final else None,
        )
        .returning(tasks.c.job_id, tasks.c.kind, tasks.c.status)
    )
    task = ended.first()
    await conn.execute(
        task_attempts.insert().values(
            task_id=row.id,
            attempt=row.attempts,
            fence=row.fence,
            worker=row.lease_owner,
            outcome=states.Outcome.LOST,
            error=error,
            started_at=row.started_at,
            ended_at=db_now(),
        )
    )
    if final and task is not None:
        await settle_ended_task(conn, settle_for, task, error)
