"""Operator actions on jobs and tasks (API and CLI share them): list, show, cancel, retry."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import jobs, task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.jobstate import lock_jobs, refresh_job

_OPEN = (states.QUEUED, states.RUNNING)


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: it will never run
    CANCEL_REQUESTED = "cancelling"  # it was running: its worker stops it (or the reaper ends it)
    ALREADY_FINISHED = "finished"  # it had ended before the cancel: nothing changed
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    status: str | None  # the task's status right after the cancel (None: no such task)


async def request_cancel(engine: AsyncEngine, task_id: int) -> CancelResult:
    """Cancel one task and say what really happened.

    Cancel and claim serialise on the task row: on PostgreSQL the row is locked (a claim's
    `SKIP LOCKED` passes it by; a claim that locked it first commits before we read it), on
    SQLite the write lock is taken before the read. So "cancelled" means no run will start and
    "cancelling" means the running run's worker sees `cancel_requested`.
    """
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            job_id = (await conn.execute(select(tasks.c.job_id).where(tasks.c.id == task_id))).scalar()
            if job_id is None:
                return CancelResult(CancelOutcome.NOT_FOUND, None)
            await lock_jobs(conn, [job_id])  # jobs before tasks: the engine's lock order
            query = select(tasks.c.status).where(tasks.c.id == task_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            status = (await conn.execute(query)).scalar_one()
            if status == states.QUEUED:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(
                        status=states.CANCELLED,
                        cancel_requested=True,
                        last_error="cancelled",
                        error_class="cancelled",
                        finished_at=db_now(),
                        updated_at=db_now(),
                    )
                )
                await refresh_job(conn, job_id)
                return CancelResult(CancelOutcome.CANCELLED, states.CANCELLED)
            if status == states.RUNNING:
                await conn.execute(
                    update(tasks).where(tasks.c.id == task_id).values(cancel_requested=True, updated_at=db_now())
                )
                return CancelResult(CancelOutcome.CANCEL_REQUESTED, states.RUNNING)
            return CancelResult(CancelOutcome.ALREADY_FINISHED, status)
    finally:
        await conn.close()


async def cancel_task(engine: AsyncEngine, task_id: int) -> str | None:
    """ "cancelled" (was queued) or "cancelling" (was running); None when the task is unknown
    or had already finished. `request_cancel` tells those two apart."""
    result = await request_cancel(engine, task_id)
    if result.outcome in (CancelOutcome.CANCELLED, CancelOutcome.CANCEL_REQUESTED):
        return result.outcome.value
    return None


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
            job_id = (await conn.execute(select(tasks.c.job_id).where(tasks.c.id == task_id))).scalar()
            if job_id is None:
                return False
            await lock_jobs(conn, [job_id])
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status.in_((states.FAILED, states.DEAD, states.CANCELLED)))
                .values(
                    status=states.QUEUED,
                    attempts=0,
                    lost_attempts=0,
                    cancel_requested=False,
                    idle=False,
                    run_after=db_now(),
                    finished_at=None,
                    updated_at=db_now(),
                )
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
        ids = (
            (
                await conn.execute(
                    select(tasks.c.id).where(
                        tasks.c.job_id == job_id, tasks.c.status.in_((states.FAILED, states.DEAD, states.CANCELLED))
                    )
                )
            )
            .scalars()
            .all()
        )
    return [task_id for task_id in ids if await retry_task(engine, task_id)]


def _task_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "kind": row.kind,
        "status": row.status,
        "priority": row.priority,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "lost_attempts": row.lost_attempts,
        "max_lost_attempts": row.max_lost_attempts,
        "fence": row.fence,
        "progress": round(row.progress, 4),
        "progress_detail": row.progress_detail,
        "last_error": row.last_error,
        "error_class": row.error_class,
        "lease_owner": row.lease_owner,
        "run_after": _iso(row.run_after),
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "result": row.result,
        "cancel_requested": row.cancel_requested,
        "correlation_id": row.correlation_id,
    }


def _job_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "priority": row.priority,
        "user_id": row.user_id,
        "progress": round(row.progress, 4),
        "error": row.error,
        "payload": row.payload,
        "result": row.result,
        "correlation_id": row.correlation_id,
        "system": row.system,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
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


async def list_tasks(
    engine: AsyncEngine,
    *,
    status: str | None = None,
    kind: str | None = None,
    job_id: int | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[dict]:
    query = _listing(tasks, {"status": status, "kind": kind, "job_id": job_id}, limit, before_id)
    async with engine.connect() as conn:
        return [_task_view(row) for row in (await conn.execute(query)).all()]


async def list_jobs(
    engine: AsyncEngine,
    *,
    status: str | None = None,
    kind: str | None = None,
    user_id: int | None = None,
    limit: int = 50,
    before_id: int | None = None,
    system: bool = False,
) -> list[dict]:
    """`system=False` hides housekeeping jobs (the scheduler's periodic runs)."""
    query = _listing(jobs, {"status": status, "kind": kind, "user_id": user_id}, limit, before_id)
    if not system:
        query = query.where(jobs.c.system.is_(False))
    async with engine.connect() as conn:
        return [_job_view(row) for row in (await conn.execute(query)).all()]


async def get_job(engine: AsyncEngine, job_id: int) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
    if row is None:
        return None
    view = _job_view(row)
    view["tasks"] = await list_tasks(engine, job_id=job_id, limit=1000)
    history = await attempt_history(engine, [t["id"] for t in view["tasks"]])
    for task in view["tasks"]:
        task["history"] = history.get(task["id"], [])
    # Seed 002's "Job Stuck in Pending": a queued task no live worker can run says so
    # (written by the NATS kernel, core/jobs/remote/kernel.py).
    # The oldest waiting task's text, as in `waiting_for_jobs`.
    ordered = sorted(view["tasks"], key=lambda t: t["id"])
    view["waiting_for"] = next(
        (text for t in ordered if (text := _waiting_text(t["status"], t["progress_detail"]))), None
    )
    return view


def _waiting_text(status: str, detail: Any) -> str | None:
    if status == states.QUEUED and isinstance(detail, dict) and detail.get("waiting_for"):
        return str(detail["waiting_for"])
    return None


async def waiting_for_jobs(engine: AsyncEngine, job_ids: list[int]) -> dict[int, str]:
    """`waiting_for` of many jobs at once (job lists): job id -> "waiting for a worker with
    capability X", for the jobs that have such a queued task. One indexed query."""
    if not job_ids:
        return {}
    query = select(tasks.c.job_id, tasks.c.status, tasks.c.progress_detail).where(
        tasks.c.job_id.in_(job_ids), tasks.c.status == states.QUEUED
    )
    found: dict[int, str] = {}
    async with engine.connect() as conn:
        for row in (await conn.execute(query.order_by(tasks.c.id))).all():
            text = _waiting_text(row.status, row.progress_detail)
            if text is not None:
                found.setdefault(row.job_id, text)
    return found


async def get_task(engine: AsyncEngine, task_id: int) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
    if row is None:
        return None
    view = _task_view(row)
    view["history"] = (await attempt_history(engine, [task_id])).get(task_id, [])
    return view


async def attempt_history(engine: AsyncEngine, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Runs that did not succeed (failed, retried, lost with their worker, cancelled,
    released), oldest first, by task."""
    if not task_ids:
        return {}
    query = select(task_attempts).where(task_attempts.c.task_id.in_(task_ids)).order_by(task_attempts.c.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    history: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        history.setdefault(row.task_id, []).append(
            {
                "attempt": row.attempt,
                "fence": row.fence,
                "worker": row.worker,
                "outcome": row.outcome,
                "error": row.error,
                "started_at": _iso(row.started_at),
                "ended_at": _iso(row.ended_at),
            }
        )
    return history
