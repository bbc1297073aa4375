"""The task queue on the database: enqueue, claim with a lease, and finish.

Every state change is a compare-and-set on (`status`, `lease_owner`), so a worker that lost its
lease (killed, paused past the lease) can never overwrite the outcome of the worker that took
the task over. On PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`; on SQLite the claim's
transaction starts with `BEGIN IMMEDIATE`, which serialises claimers on the write lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import JsonDoc, utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.jobstate import lock_jobs, refresh_job, refresh_jobs
from reelhouse.core.telemetry.correlation import current_correlation_id


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    task_id: int
    created: bool  # False when the idempotency key matched an existing task


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    job_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    correlation_id: str | None
    timeout_seconds: float | None


class TaskQueue:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # ---- enqueue -------------------------------------------------------------------------
    async def create_job(
        self,
        conn: AsyncConnection,
        kind: str,
        payload: dict[str, Any],
        *,
        user_id: int | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
    ) -> int:
        now = utcnow()
        result = await conn.execute(
            jobs.insert()
            .values(
                kind=kind, payload=payload, user_id=user_id, priority=priority,
                idempotency_key=idempotency_key, status=states.JOB_QUEUED,
                correlation_id=current_correlation_id(), created_at=now, updated_at=now,
            )
            .returning(jobs.c.id)
        )
        return int(result.scalar_one())

    async def add_task(
        self,
        conn: AsyncConnection,
        job_id: int,
        kind: str,
        payload: dict[str, Any],
        *,
        priority: int = 0,
        max_attempts: int = 5,
        run_after: datetime | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        required_capability: str | None = None,
    ) -> int:
        now = utcnow()
        result = await conn.execute(
            tasks.insert()
            .values(
                job_id=job_id, kind=kind, payload=payload, priority=priority,
                max_attempts=max_attempts, run_after=run_after or now,
                idempotency_key=idempotency_key, timeout_seconds=timeout_seconds,
                required_capability=required_capability, status=states.QUEUED,
                correlation_id=current_correlation_id(), created_at=now, updated_at=now,
            )
            .returning(tasks.c.id)
        )
        return int(result.scalar_one())

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        job_id: int | None = None,
        job_kind: str | None = None,
        user_id: int | None = None,
        priority: int = 0,
        max_attempts: int = 5,
        run_after: datetime | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        required_capability: str | None = None,
        conn: AsyncConnection | None = None,
    ) -> Enqueued:
        """Add a task (in a new job unless `job_id` is given).

        With an idempotency key, enqueueing the same work twice returns the first task instead
        of creating a second one; a race between two enqueuers is settled by the unique index.
        """
        payload = payload or {}
        options = dict(
            priority=priority, max_attempts=max_attempts, run_after=run_after,
            idempotency_key=idempotency_key, timeout_seconds=timeout_seconds,
            required_capability=required_capability,
        )
        if idempotency_key:
            existing = await self._find_by_key(idempotency_key, conn)
            if existing:
                return existing
        try:
            if conn is not None:
                return await self._insert(conn, kind, payload, job_id, job_kind, user_id, options)
            async with self.engine.begin() as own:
                return await self._insert(own, kind, payload, job_id, job_kind, user_id, options)
        except IntegrityError:
            if idempotency_key and conn is None:
                existing = await self._find_by_key(idempotency_key, None)
                if existing:
                    return existing
            raise

    async def _insert(self, conn: AsyncConnection, kind: str, payload: dict[str, Any],
                      job_id: int | None, job_kind: str | None, user_id: int | None,
                      options: dict[str, Any]) -> Enqueued:
        new_job = job_id is None
        if job_id is None:
            job_id = await self.create_job(
                conn, job_kind or kind, payload, user_id=user_id, priority=options["priority"],
                idempotency_key=options["idempotency_key"],
            )
        task_id = await self.add_task(conn, job_id, kind, payload, **options)
        if not new_job:
            await refresh_job(conn, job_id)
        return Enqueued(job_id=job_id, task_id=task_id, created=True)

    async def _find_by_key(self, key: str, conn: AsyncConnection | None) -> Enqueued | None:
        query = select(tasks.c.id, tasks.c.job_id).where(tasks.c.idempotency_key == key)
        if conn is not None:
            row = (await conn.execute(query)).first()
        else:
            async with self.engine.connect() as own:
                row = (await own.execute(query)).first()
        return Enqueued(job_id=row.job_id, task_id=row.id, created=False) if row else None

    # ---- claim ---------------------------------------------------------------------------
    async def claim(
        self,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        lease: timedelta,
        capabilities: Iterable[str] = (),
        global_limit: int | None = None,
    ) -> list[ClaimedTask]:
        """Claim up to `limit` runnable tasks of `kinds`, highest priority first.

        `global_limit` (for a single kind) caps how many of that kind may run at once across all
        workers; the count and the claim happen under one lock so two workers cannot both see
        the last free slot.
        """
        if limit <= 0 or not kinds:
            return []
        now = utcnow()
        caps = list(capabilities)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                if global_limit is not None:
                    if self.postgres:
                        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(kinds[0]))))
                    running = (await conn.execute(
                        select(func.count()).select_from(tasks).where(
                            tasks.c.kind == kinds[0], tasks.c.status == states.RUNNING)
                    )).scalar_one()
                    limit = min(limit, global_limit - running)
                    if limit <= 0:
                        return []
                capability_ok = tasks.c.required_capability.is_(None)
                if caps:
                    capability_ok = or_(capability_ok, tasks.c.required_capability.in_(caps))
                candidates = (
                    select(tasks.c.id)
                    .where(tasks.c.status == states.QUEUED, tasks.c.run_after <= now,
                           tasks.c.kind.in_(list(kinds)), capability_ok)
                    .order_by(tasks.c.priority.desc(), tasks.c.run_after, tasks.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                result = await conn.execute(
                    update(tasks)
                    .where(tasks.c.id.in_(candidates.scalar_subquery()))
                    .values(status=states.RUNNING, lease_owner=owner, lease_expires_at=now + lease,
                            heartbeat_at=now, attempts=tasks.c.attempts + 1, started_at=now,
                            updated_at=now)
                    .returning(tasks.c.id, tasks.c.job_id, tasks.c.kind, tasks.c.payload,
                               tasks.c.attempts, tasks.c.max_attempts, tasks.c.correlation_id,
                               tasks.c.timeout_seconds)
                    .execution_options(synchronize_session=False)
                )
                claimed = [ClaimedTask(*row) for row in result.all()]
                if claimed:
                    job_ids = sorted({t.job_id for t in claimed})
                    # An UPDATE ... IN (...) alone would lock in physical order.
                    await lock_jobs(conn, job_ids)
                    await conn.execute(
                        update(jobs)
                        .where(jobs.c.id.in_(job_ids), jobs.c.status == states.JOB_QUEUED)
                        .values(status=states.JOB_PROCESSING, updated_at=now)
                    )
                return sorted(claimed, key=lambda t: t.id)
        finally:
            await conn.close()

    # ---- lease upkeep --------------------------------------------------------------------
    async def heartbeat(self, owner: str, task_ids: Sequence[int], lease: timedelta) -> set[int]:
        """Extend the leases this worker still holds; returns the ids it still owns."""
        if not task_ids:
            return set()
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(list(task_ids)), tasks.c.lease_owner == owner,
                       tasks.c.status == states.RUNNING)
                .values(lease_expires_at=now + lease, heartbeat_at=now)
                .returning(tasks.c.id)
            )
            return {row.id for row in result}

    async def cancel_requested(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        async with self.engine.connect() as conn:
            result = await conn.execute(
                select(tasks.c.id).where(tasks.c.id.in_(list(task_ids)), tasks.c.cancel_requested)
            )
            return {row.id for row in result}

    async def reap_expired_leases(self) -> int:
        """Return tasks whose worker vanished (lease expired) to the queue, or end them.

        A lost run counts as an attempt: a task that keeps killing its worker ends up dead
        instead of looping forever. A task whose cancel was requested ends cancelled.
        """
        now = utcnow()
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                expired = and_(tasks.c.status == states.RUNNING, tasks.c.lease_expires_at < now)
                rows = (await conn.execute(
                    select(tasks.c.id, tasks.c.job_id, tasks.c.attempts, tasks.c.max_attempts,
                           tasks.c.cancel_requested).where(expired).with_for_update(skip_locked=True)
                )).all()
                for row in rows:
                    if row.cancel_requested:
                        status, error = states.CANCELLED, "cancelled"
                    elif row.attempts >= row.max_attempts:
                        status, error = states.DEAD, "lease expired: worker lost, attempts exhausted"
                    else:
                        status, error = states.QUEUED, "lease expired: worker lost; requeued"
                    await conn.execute(
                        update(tasks).where(tasks.c.id == row.id, expired)
                        .values(status=status, lease_owner=None, lease_expires_at=None,
                                last_error=error, error_class="lease", updated_at=now,
                                run_after=now,
                                finished_at=now if status in states.TASK_FINAL else None)
                    )
                await refresh_jobs(conn, {row.job_id for row in rows})
                return len(rows)
        finally:
            await conn.close()

    # ---- finish --------------------------------------------------------------------------
    async def _finish(self, task_id: int, owner: str, values: dict[str, Any]) -> bool:
        """Compare-and-set from running-under-our-lease to a new state; False if we lost it."""
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.lease_owner == owner,
                       tasks.c.status == states.RUNNING)
                .values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
                .returning(tasks.c.job_id)
            )
            row = result.first()
            if row is None:
                return False
            await refresh_job(conn, row.job_id)
            return True

    async def succeed(self, task_id: int, owner: str, result: Any = None) -> bool:
        return await self._finish(task_id, owner, {
            "status": states.SUCCEEDED, "result": result, "progress": 1.0, "finished_at": utcnow(),
            "last_error": None, "error_class": None,
        })

    async def succeed_many(self, owner: str, results: dict[int, Any]) -> set[int]:
        """Finish a batch of successful runs in one transaction (the worker batches completions
        that arrive while the previous batch is being written). Returns the ids still ours."""
        if not results:
            return set()
        now = utcnow()
        # Results go in the same UPDATE as the status. A second UPDATE of a row this transaction
        # already changed makes PostgreSQL re-check the tasks -> jobs foreign key, which takes a
        # KEY SHARE lock on the job row in task order, before refresh_jobs locks jobs in id
        # order: two completions then deadlocked on each other's job rows.
        with_result = {i: r for i, r in results.items() if r is not None}
        result = (case({i: literal(r, JsonDoc) for i, r in with_result.items()}, value=tasks.c.id,
                       else_=null()) if with_result else null())
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(list(results)), tasks.c.lease_owner == owner,
                       tasks.c.status == states.RUNNING)
                .values(status=states.SUCCEEDED, progress=1.0, finished_at=now, last_error=None,
                        error_class=None, lease_owner=None, lease_expires_at=None, updated_at=now,
                        result=result)
                .returning(tasks.c.id, tasks.c.job_id)
            )).all()
            await refresh_jobs(conn, {row.job_id for row in rows})
            return {row.id for row in rows}

    async def fail_permanently(self, task_id: int, owner: str, reason: str) -> bool:
        return await self._finish(task_id, owner, {
            "status": states.FAILED, "last_error": reason, "error_class": "permanent",
            "finished_at": utcnow(),
        })

    async def retry_later(self, task_id: int, owner: str, reason: str, run_after: datetime,
                          attempts: int, max_attempts: int, error_class: str = "transient",
                          spend_attempt: bool = True) -> str:
        """Requeue after a failure, or mark dead when attempts are used up. Rate limits and
        open circuits do not spend an attempt: waiting for a provider is not a failure."""
        if spend_attempt and attempts >= max_attempts:
            ok = await self._finish(task_id, owner, {
                "status": states.DEAD, "last_error": f"{reason} (gave up after {attempts} attempts)",
                "error_class": error_class, "finished_at": utcnow(),
            })
            return states.DEAD if ok else "lost"
        values: dict[str, Any] = {
            "status": states.QUEUED, "last_error": reason, "error_class": error_class,
            "run_after": run_after,
        }
        if not spend_attempt:
            values["attempts"] = tasks.c.attempts - 1
        ok = await self._finish(task_id, owner, values)
        return states.QUEUED if ok else "lost"

    async def mark_cancelled(self, task_id: int, owner: str) -> bool:
        return await self._finish(task_id, owner, {
            "status": states.CANCELLED, "last_error": "cancelled", "error_class": "cancelled",
            "finished_at": utcnow(),
        })

    async def release(self, task_id: int, owner: str) -> bool:
        """Give a task back untouched (worker shutting down): the run does not count."""
        return await self._finish(task_id, owner, {
            "status": states.QUEUED, "attempts": tasks.c.attempts - 1, "run_after": utcnow(),
        })

    async def save_progress(self, task_id: int, owner: str, fraction: float,
                            detail: dict[str, Any] | None) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tasks).where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
                .values(progress=max(0.0, min(1.0, fraction)), progress_detail=detail, updated_at=now)
                .returning(tasks.c.job_id)
            )
            row = result.first()
            if row is not None:
                await refresh_job(conn, row.job_id, progress_only=True)
