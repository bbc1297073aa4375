# Over 400 lines: enqueue, claim, lease and finish are the one owner of the tasks table's SQL.
"""The task queue on the database: enqueue, claim with a lease and a fencing token, finish.

Every write a run makes is a compare-and-set on its fencing token (`fence`, bumped by every
claim): same fence, still `running`, lease not expired by the database's clock. A worker that
lost its lease (killed, paused past the lease, partitioned) can never overwrite the outcome of
the run that took the task over. The per-task statements (claim, heartbeat, cancel poll,
completion) live in hotpath*.py; the rarer transitions are SQLAlchemy Core here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, case, cast, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import waiting_out_outages, write_connection
from reelhouse.core.db.models import jobs, task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.dbtime import db_now
from reelhouse.core.jobs.errors import LeaseLost
from reelhouse.core.jobs.hotpath import ClaimedTask, Lease, claimed_task, hot_path, result_json
from reelhouse.core.jobs.jobstate import lock_jobs_of_tasks, refresh_job, refresh_jobs, settle_ended_task
from reelhouse.core.jobs.reaper import reap_expired_leases
from reelhouse.core.jobs.registry import SettleLookup
from reelhouse.core.telemetry.correlation import current_correlation_id
from reelhouse.core.telemetry.tracing import current_trace_context

__all__ = ["ClaimedTask", "Enqueued", "Lease", "TaskQueue"]


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    task_id: int
    created: bool  # False when the idempotency key matched an existing task


def holds(lease: Lease) -> Any:
    """The fencing condition: this run still holds the task."""
    return and_(
        tasks.c.id == lease.task_id,
        tasks.c.fence == lease.fence,
        tasks.c.status == states.RUNNING,
        tasks.c.lease_expires_at > db_now(),
    )


def _run_after(value: datetime | timedelta | None) -> Any:
    """A caller's absolute time is kept as given; a delay counts from the database's now."""
    if isinstance(value, datetime):
        return value
    return db_now(value) if value else db_now()


class TaskQueue:
    def __init__(
        self, engine: AsyncEngine, *, hold_connections: bool = False, settle_for: SettleLookup | None = None
    ) -> None:
        """`hold_connections`: keep the hot path's driver connections for the queue's life (a
        worker does; call `aclose`). `settle_for`: a kind's settle hook by its name (a worker's
        or kernel's registry), run when this queue ends a task failed, dead or cancelled."""
        self.engine = engine
        self.settle_for = settle_for
        self.postgres = engine.dialect.name == "postgresql"
        self.hot = hot_path(engine, hold=hold_connections)

    async def aclose(self) -> None:
        await self.hot.aclose()

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
        system: bool = False,
    ) -> int:
        result = await conn.execute(
            jobs.insert()
            .values(
                kind=kind,
                payload=payload,
                user_id=user_id,
                priority=priority,
                idempotency_key=idempotency_key,
                status=states.JOB_QUEUED,
                correlation_id=current_correlation_id(),
                system=system,
                created_at=db_now(),
                updated_at=db_now(),
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
        max_lost_attempts: int = 5,
        run_after: datetime | timedelta | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        required_capability: str | None = None,
    ) -> int:
        result = await conn.execute(
            tasks.insert()
            .values(
                job_id=job_id,
                kind=kind,
                payload=payload,
                priority=priority,
                max_attempts=max_attempts,
                max_lost_attempts=max_lost_attempts,
                run_after=_run_after(run_after),
                idempotency_key=idempotency_key,
                timeout_seconds=timeout_seconds,
                required_capability=required_capability,
                status=states.QUEUED,
                correlation_id=current_correlation_id(),
                trace_context=current_trace_context(),
                created_at=db_now(),
                updated_at=db_now(),
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
        max_lost_attempts: int = 5,
        run_after: datetime | timedelta | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        required_capability: str | None = None,
        system: bool = False,
        conn: AsyncConnection | None = None,
    ) -> Enqueued:
        """Add a task (in a new job unless `job_id` is given). `run_after` is an absolute time
        or a delay from the database's now. `system`: housekeeping, hidden from listings.

        With an idempotency key, enqueueing the same work twice returns the first task instead
        of creating a second one; a race between two enqueuers is settled by the unique index.
        """
        payload = payload or {}
        options = {
            "priority": priority,
            "max_attempts": max_attempts,
            "max_lost_attempts": max_lost_attempts,
            "run_after": run_after,
            "idempotency_key": idempotency_key,
            "timeout_seconds": timeout_seconds,
            "required_capability": required_capability,
        }
        job = {"job_id": job_id, "job_kind": job_kind, "user_id": user_id, "system": system}
        if idempotency_key:
            existing = await self._find_by_key(idempotency_key, conn)
            if existing:
                return existing
        try:
            if conn is not None:
                return await self._insert(conn, kind, payload, job, options)
            async with self.engine.begin() as own:
                return await self._insert(own, kind, payload, job, options)
        except IntegrityError:
            if idempotency_key and conn is None:
                existing = await self._find_by_key(idempotency_key, None)
                if existing:
                    return existing
            raise

    async def _insert(
        self, conn: AsyncConnection, kind: str, payload: dict[str, Any], job: dict[str, Any], options: dict[str, Any]
    ) -> Enqueued:
        job_id = job["job_id"]
        new_job = job_id is None
        if job_id is None:
            job_id = await self.create_job(
                conn,
                job["job_kind"] or kind,
                payload,
                user_id=job["user_id"],
                priority=options["priority"],
                idempotency_key=options["idempotency_key"],
                system=job["system"],
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

    # ---- claim and lease upkeep (hot path) -------------------------------------------------
    async def claim(
        self,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        lease: timedelta,
        capabilities: Iterable[str] = (),
        global_limit: int | None = None,
    ) -> list[ClaimedTask]:
        """Claim up to `limit` runnable tasks of `kinds`, highest priority first, each with a
        new fencing token and a lease that ends `lease` after the database's now.

        `global_limit` (for a single kind) caps how many of that kind may run at once across all
        workers; the count and the claim happen under one lock so two workers cannot both see
        the last free slot.
        """
        if limit <= 0 or not kinds:
            return []
        return await self.hot.claim(owner, list(kinds), limit, lease.total_seconds(), list(capabilities), global_limit)

    async def claim_task(
        self, task_id: int, owner: str, lease: timedelta, capabilities: Iterable[str] = ()
    ) -> ClaimedTask | str:
        """Claim one given task (a remote worker was handed a pointer to it): the same
        compare-and-set as `claim` (queued, runnable, capability held; fence bumped, lease from
        the database's now). Otherwise returns why not: `running` (another run holds it),
        `waiting` (its run_after is ahead), `capability`, `finished` or `missing`."""
        caps = list(capabilities)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await lock_jobs_of_tasks(conn, [task_id])
                capability_ok: Any = tasks.c.required_capability.is_(None)
                if caps:
                    capability_ok = capability_ok | tasks.c.required_capability.in_(caps)
                row = (
                    await conn.execute(
                        update(tasks)
                        .where(
                            tasks.c.id == task_id,
                            tasks.c.status == states.QUEUED,
                            tasks.c.run_after <= db_now(),
                            capability_ok,
                        )
                        .values(
                            status=states.RUNNING,
                            lease_owner=owner,
                            fence=tasks.c.fence + 1,
                            lease_expires_at=db_now(lease),
                            heartbeat_at=db_now(),
                            attempts=tasks.c.attempts + 1,
                            started_at=db_now(),
                            updated_at=db_now(),
                            # The pointer that led here stays in the stream until it is settled.
                            dispatched_fence=tasks.c.fence + 1,
                            dispatched_at=db_now(),
                        )
                        .returning(
                            tasks.c.id,
                            tasks.c.job_id,
                            tasks.c.kind,
                            tasks.c.payload,
                            tasks.c.attempts,
                            tasks.c.max_attempts,
                            tasks.c.correlation_id,
                            tasks.c.timeout_seconds,
                            tasks.c.fence,
                            tasks.c.lost_attempts,
                            tasks.c.max_lost_attempts,
                        )
                    )
                ).first()
                if row is not None:
                    await conn.execute(
                        update(jobs)
                        .where(jobs.c.id == row.job_id, jobs.c.status == states.JOB_QUEUED)
                        .values(status=states.JOB_PROCESSING, updated_at=db_now())
                    )
                    return claimed_task(tuple(row), owner)
                current = (
                    await conn.execute(
                        select(
                            tasks.c.status,
                            tasks.c.required_capability,
                            (tasks.c.run_after > db_now()).label("later"),
                        ).where(tasks.c.id == task_id)
                    )
                ).first()
        finally:
            await conn.close()
        if current is None:
            return "missing"
        if current.status == states.RUNNING:
            return "running"
        if current.status != states.QUEUED:
            return "finished"
        if current.later:
            return "waiting"
        return "capability"

    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> set[int]:
        """Extend the leases still held; returns their task ids (the others are lost)."""
        return await self.hot.heartbeat(leases, lease.total_seconds())

    async def cancel_requested(self, task_ids: Sequence[int]) -> set[int]:
        return await self.hot.cancel_requested(task_ids)

    async def succeed_many(self, results: dict[Lease, Any]) -> set[Lease]:
        """Finish a batch of successful runs in one transaction (the worker batches completions
        that arrive while the previous batch is being written). Returns the leases still held."""
        done = [(lease.task_id, lease.fence, result_json(result)) for lease, result in results.items()]
        written = await self.hot.complete(done)
        return {lease for lease in results if lease.task_id in written}

    async def succeed(self, lease: Lease, result: Any = None) -> bool:
        return bool(await self.succeed_many({lease: result}))

    # ---- fencing for handlers --------------------------------------------------------------
    @asynccontextmanager
    async def fenced(self, lease: Lease, action: str = "write") -> AsyncIterator[AsyncConnection]:
        """A transaction that commits only while `lease` holds: the task row is locked (on
        SQLite the write lock is) and checked first, so the reaper or a new claim cannot take
        the task before this commits. Raises LeaseLost without running the block otherwise.
        A database that is restarting is waited for (up to OUTAGE_WAIT_SECONDS) before the
        block runs: nothing is written until the check passed."""
        async with AsyncExitStack() as stack:
            conn = await waiting_out_outages(lambda: stack.enter_async_context(self._fenced(lease, action)))
            yield conn

    @asynccontextmanager
    async def _fenced(self, lease: Lease, action: str) -> AsyncIterator[AsyncConnection]:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                # Jobs before tasks, the engine's lock order (a follow-up enqueue locks the job).
                await lock_jobs_of_tasks(conn, [lease.task_id])
                check = select(tasks.c.id).where(holds(lease))
                if self.postgres:
                    check = check.with_for_update()
                if (await conn.execute(check)).first() is None:
                    raise LeaseLost(lease.task_id, lease.fence, action)
                yield conn
        finally:
            await conn.close()

    async def still_holds(self, lease: Lease) -> bool:
        """Whether the run still holds its task; a restarting database is waited for (the
        answer decides whether a running task carries on, so "unreachable" is not "no")."""

        async def check() -> bool:
            async with self.engine.connect() as conn:
                return (await conn.execute(select(tasks.c.id).where(holds(lease)))).first() is not None

        return await waiting_out_outages(check)

    async def save_progress(self, lease: Lease, fraction: float, detail: dict[str, Any] | None) -> bool:
        """Write progress if the run still holds its task; False (nothing written) otherwise."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(tasks)
                    .where(holds(lease))
                    .values(progress=max(0.0, min(1.0, fraction)), progress_detail=detail, updated_at=db_now())
                    .returning(tasks.c.job_id)
                )
            ).first()
        if row is None:
            return False
        async with self.engine.begin() as conn:
            await refresh_job(conn, row.job_id, progress_only=True)
        return True

    async def mark_idle(self, lease: Lease) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(update(tasks).where(holds(lease)).values(idle=True))
            return bool(result.rowcount)

    # ---- the other ends of a run -------------------------------------------------------------
    async def _finish(
        self,
        lease: Lease,
        values: dict[str, Any],
        outcome: states.Outcome | None,
        error: str | None = None,
    ) -> str | None:
        """Compare-and-set from running-under-this-fence to a new state, with the job
        re-aggregated and, for a run that did not succeed, a history row; a task that ended
        failed, dead or cancelled is settled (its kind's hook) in the same transaction.
        None if lost."""
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await lock_jobs_of_tasks(conn, [lease.task_id])
                row = (
                    await conn.execute(
                        update(tasks)
                        .where(holds(lease))
                        .values(lease_owner=None, lease_expires_at=None, updated_at=db_now(), **values)
                        .returning(tasks.c.job_id, tasks.c.kind, tasks.c.status, tasks.c.started_at)
                    )
                ).first()
                if row is None:
                    return None
                if outcome is not None:
                    outcome = states.Outcome.DEAD if row.status == states.DEAD else outcome
                    await conn.execute(
                        task_attempts.insert().values(
                            task_id=lease.task_id,
                            attempt=lease.attempt,
                            fence=lease.fence,
                            worker=lease.owner,
                            outcome=outcome,
                            error=error,
                            started_at=row.started_at,
                            ended_at=db_now(),
                        )
                    )
                if row.status in states.TASK_UNSUCCESSFUL:
                    await settle_ended_task(conn, self.settle_for, row, error or str(row.status))
                await refresh_jobs(conn, [row.job_id])
                return str(row.status)
        finally:
            await conn.close()

    async def fail_permanently(self, lease: Lease, reason: str) -> bool:
        values = {"status": states.FAILED, "last_error": reason, "error_class": "permanent", "finished_at": db_now()}
        return await self._finish(lease, values, states.Outcome.FAILED, reason) is not None

    async def retry_later(
        self,
        lease: Lease,
        reason: str,
        delay: timedelta,
        *,
        error_class: str = "transient",
        spend_attempt: bool = True,
    ) -> str | None:
        """Requeue after `delay` (from the database's now), or mark dead when attempts are used
        up (then the task is settled). Rate limits and open circuits do not spend an attempt: waiting
        for a provider is not a failure. Returns the new status, or None when the lease was lost."""
        exhausted = tasks.c.attempts >= tasks.c.max_attempts
        if not spend_attempt:
            values: dict[str, Any] = {
                "status": states.QUEUED,
                "last_error": reason,
                "error_class": error_class,
                "run_after": db_now(delay),
                "attempts": tasks.c.attempts - 1,
            }
            return await self._finish(lease, values, None)
        gave_up = literal(f"{reason} (gave up after ") + cast(tasks.c.attempts, String) + literal(" attempts)")
        values = {
            "status": case((exhausted, states.DEAD), else_=states.QUEUED),
            "last_error": case((exhausted, gave_up), else_=reason),
            "error_class": error_class,
            "run_after": db_now(delay),
            "finished_at": case((exhausted, db_now()), else_=None),
        }
        return await self._finish(lease, values, states.Outcome.RETRIED, reason)

    async def mark_cancelled(self, lease: Lease) -> bool:
        values = {
            "status": states.CANCELLED,
            "last_error": "cancelled",
            "error_class": "cancelled",
            "finished_at": db_now(),
        }
        return await self._finish(lease, values, states.Outcome.CANCELLED, "cancelled") is not None

    async def release(self, lease: Lease) -> bool:
        """Give a task back untouched (worker shutting down): the run does not count."""
        values = {"status": states.QUEUED, "attempts": tasks.c.attempts - 1, "run_after": db_now()}
        return await self._finish(lease, values, states.Outcome.RELEASED, "released on shutdown") is not None

    # ---- lost workers ------------------------------------------------------------------------
    async def reap_expired_leases(self) -> int:
        """Requeue (or end) tasks whose lease expired by the database's clock; see reaper.py."""
        return await reap_expired_leases(self.engine, self.settle_for)
