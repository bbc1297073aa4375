"""Operator actions on jobs and tasks (API and CLI share them): list, show, cancel, retry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.jobstate import refresh_job

_OPEN = (states.QUEUED, states.RUNNING)


async def cancel_task(engine: AsyncEngine, task_id: int) -> str | None:
    """Queued tasks end at once; running ones get `cancel_requested`, which the owning worker
    turns into a cancellation of the handler (and its subprocess). Returns the new status, or
    None when the task is unknown or already finished."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            row = (await conn.execute(select(tasks.c.status, tasks.c.job_id)
                                      .where(tasks.c.id == task_id))).first()
            if row is None or row.status not in _OPEN:
                return None
            now = utcnow()
            if row.status == states.QUEUED:
                await conn.execute(update(tasks).where(tasks.c.id == task_id, tasks.c.status == states.QUEUED)
                                   .values(status=states.CANCELLED, cancel_requested=True,
                                           last_error="cancelled", error_class="cancelled",
                                           finished_at=now, updated_at=now))
                await refresh_job(conn, row.job_id)
                return states.CANCELLED
            await conn.execute(update(tasks).where(tasks.c.id == task_id)
                               .values(cancel_requested=True, updated_at=now))
            return "cancelling"
    finally:
        await conn.close()


async def cancel_job(engine: AsyncEngine, job_id: int) -> list[tuple[int, str]]:
    """Cancel every open task of a job. Scans again until none is left, because a running
    handler may enqueue a follow-up task (download -> upload) while we cancel."""
    results: list[tuple[int, str]] = []
    handled: set[int] = set()
    while True:
        query = select(tasks.c.id).where(tasks.c.job_id == job_id, tasks.c.status.in_(_OPEN))
        if handled:
            query = query.where(tasks.c.id.notin_(handled))
        async with engine.connect() as conn:
            ids = (await conn.execute(query)).scalars().all()
        if not ids:
            return results
        for task_id in ids:
            handled.add(task_id)
            outcome = await cancel_task(engine, task_id)
            if outcome:
                results.append((task_id, outcome))


async def retry_task(engine: AsyncEngine, task_id: int) -> bool:
    """Put a finished-unsuccessfully task back in the queue with a fresh attempt budget."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id,
                       tasks.c.status.in_((states.FAILED, states.DEAD, states.CANCELLED)))
                .values(status=states.QUEUED, attempts=0, cancel_requested=False, run_after=utcnow(),
                        finished_at=None, updated_at=utcnow())
                .returning(tasks.c.job_id)
            )
            row = result.first()
            if row is None:
                return False
            await refresh_job(conn, row.job_id)
            return True
    finally:
        await conn.close()


async def retry_job(engine: AsyncEngine, job_id: int) -> list[int]:
    async with engine.connect() as conn:
        ids = (await conn.execute(select(tasks.c.id).where(
            tasks.c.job_id == job_id,
            tasks.c.status.in_((states.FAILED, states.DEAD, states.CANCELLED))))).scalars().all()
    return [task_id for task_id in ids if await retry_task(engine, task_id)]


def _task_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "job_id": row.job_id, "kind": row.kind, "status": row.status,
        "priority": row.priority, "attempts": row.attempts, "max_attempts": row.max_attempts,
        "progress": round(row.progress, 4), "progress_detail": row.progress_detail,
        "last_error": row.last_error, "error_class": row.error_class,
        "lease_owner": row.lease_owner, "run_after": _iso(row.run_after),
        "created_at": _iso(row.created_at), "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at), "result": row.result,
        "cancel_requested": row.cancel_requested, "correlation_id": row.correlation_id,
    }


def _job_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind, "status": row.status, "priority": row.priority,
        "user_id": row.user_id, "progress": round(row.progress, 4), "error": row.error,
        "payload": row.payload, "result": row.result, "correlation_id": row.correlation_id,
        "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
        "finished_at": _iso(row.finished_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _listing(table, filters: dict[str, Any], limit: int, before_id: int | None):
    """Newest first, keyset-paginated by id; `filters` maps column name to value (None: any)."""
    query = select(table).order_by(table.c.id.desc()).limit(limit)
    for column, value in filters.items():
        if value is not None:
            query = query.where(table.c[column] == value)
    if before_id is not None:
        query = query.where(table.c.id < before_id)
    return query


async def list_tasks(engine: AsyncEngine, *, status: str | None = None, kind: str | None = None,
                     job_id: int | None = None, limit: int = 50, before_id: int | None = None) -> list[dict]:
    query = _listing(tasks, {"status": status, "kind": kind, "job_id": job_id}, limit, before_id)
    async with engine.connect() as conn:
        return [_task_view(row) for row in (await conn.execute(query)).all()]


async def list_jobs(engine: AsyncEngine, *, status: str | None = None, kind: str | None = None,
                    user_id: int | None = None, limit: int = 50, before_id: int | None = None) -> list[dict]:
    query = _listing(jobs, {"status": status, "kind": kind, "user_id": user_id}, limit, before_id)
    async with engine.connect() as conn:
        return [_job_view(row) for row in (await conn.execute(query)).all()]


async def get_job(engine: AsyncEngine, job_id: int) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
    if row is None:
        return None
    view = _job_view(row)
    view["tasks"] = await list_tasks(engine, job_id=job_id, limit=1000)
    return view


async def get_task(engine: AsyncEngine, task_id: int) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
    return _task_view(row) if row else None
