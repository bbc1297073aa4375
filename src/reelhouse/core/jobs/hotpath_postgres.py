"""The hot path on PostgreSQL, through asyncpg directly (see hotpath.py).

A claim is one statement: pick runnable rows `FOR UPDATE SKIP LOCKED`, take them with a new
fencing token and a lease from `now()`, and mark their queued jobs processing. Those job rows
are taken `SKIP LOCKED`: every other writer locks a job before its tasks (`jobstate.lock_jobs`),
and a claim holds task rows already, so waiting for a job here would deadlock with a cancel of
it. A skipped job is being rewritten by that other transaction, whose refresh (or the next one)
sets its status from the tasks. A completion is one short transaction: lock the jobs in id order, finish the tasks
whose fence still holds, re-aggregate the jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from reelhouse.core.jobs.hotpath import (
    CLAIM_RETURNING,
    ClaimedTask,
    Completion,
    DriverConnections,
    Lease,
    claimed_task,
)
from reelhouse.core.jobs.jobsql import refresh_jobs_sql

HOLDS_LEASE = "t.status = 'running' AND t.lease_expires_at > now()"

CLAIM = f"""
WITH candidate AS (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_after <= now() AND kind = ANY($1::text[])
      AND (required_capability IS NULL OR required_capability = ANY($2::text[]))
    ORDER BY priority DESC, run_after, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE tasks AS t SET
        status = 'running', lease_owner = $4, fence = t.fence + 1,
        lease_expires_at = now() + make_interval(secs => $5), heartbeat_at = now(),
        attempts = t.attempts + 1, started_at = now(), updated_at = now()
    FROM candidate WHERE t.id = candidate.id
    RETURNING t.{CLAIM_RETURNING.replace(", ", ", t.")}
), started_jobs AS (
    SELECT id FROM jobs WHERE id IN (SELECT job_id FROM claimed) AND status = 'queued'
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
), marked AS (
    UPDATE jobs SET status = 'processing', updated_at = now()
    FROM started_jobs WHERE jobs.id = started_jobs.id
)
SELECT * FROM claimed ORDER BY id
"""

# Global concurrency: the count and the claim happen under one advisory lock per kind, so
# two claimers cannot both see the last free slot.
GLOBAL_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1))"
RUNNING_OF_KIND = "SELECT count(*) FROM tasks WHERE kind = $1 AND status = 'running'"

HEARTBEAT = f"""
UPDATE tasks AS t SET lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS held(id, fence)
WHERE t.id = held.id AND t.fence = held.fence AND {HOLDS_LEASE}
RETURNING t.id
"""

CANCEL_REQUESTED = "SELECT id FROM tasks WHERE id = ANY($1::bigint[]) AND cancel_requested"

LOCK_JOBS_OF_TASKS = (
    "SELECT id FROM jobs WHERE id IN (SELECT job_id FROM tasks WHERE id = ANY($1::bigint[]))"
    " ORDER BY id FOR NO KEY UPDATE"
)

COMPLETE = f"""
UPDATE tasks AS t SET
    status = 'succeeded', result = done.result::jsonb, progress = 1.0, progress_detail = NULL, finished_at = now(),
    last_error = NULL, error_class = NULL, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = now()
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS done(id, fence, result)
WHERE t.id = done.id AND t.fence = done.fence AND {HOLDS_LEASE}
RETURNING t.id, t.job_id
"""


class PostgresHotPath:
    def __init__(self, connections: DriverConnections) -> None:
        self.connections = connections

    async def aclose(self) -> None:
        await self.connections.aclose()

    async def claim(
        self,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
        capabilities: Sequence[str],
        global_limit: int | None,
    ) -> list[ClaimedTask]:
        args = (list(kinds), list(capabilities), limit, owner, float(lease_seconds))
        async with self.connections.use("claim") as db:
            if global_limit is None:
                rows = await db.fetch(CLAIM, *args)
            else:
                async with db.transaction():
                    await db.execute(GLOBAL_LOCK, kinds[0])
                    room = min(limit, global_limit - await db.fetchval(RUNNING_OF_KIND, kinds[0]))
                    if room <= 0:
                        return []
                    rows = await db.fetch(CLAIM, *args[:2], room, *args[3:])
        return [claimed_task(row, owner) for row in rows]

    async def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> set[int]:
        if not leases:
            return set()
        async with self.connections.use("heartbeat") as db:
            rows = await db.fetch(
                HEARTBEAT, [lease.task_id for lease in leases], [lease.fence for lease in leases], float(lease_seconds)
            )
        return {row[0] for row in rows}

    async def cancel_requested(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        async with self.connections.use("cancel") as db:
            return {row[0] for row in await db.fetch(CANCEL_REQUESTED, list(task_ids))}

    async def complete(self, done: Sequence[Completion]) -> set[int]:
        if not done:
            return set()
        ids = [task_id for task_id, _, _ in done]
        async with self.connections.use("complete") as db, db.transaction():
            await db.execute(LOCK_JOBS_OF_TASKS, ids)
            rows = await db.fetch(COMPLETE, ids, [fence for _, fence, _ in done], [result for _, _, result in done])
            finished_jobs = sorted({row[1] for row in rows})
            if finished_jobs:
                await db.execute(refresh_jobs_sql("postgresql"), finished_jobs)
        return {row[0] for row in rows}
