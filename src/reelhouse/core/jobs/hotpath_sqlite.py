"""The hot path on SQLite, through the driver connection (see hotpath.py).

Multi-statement steps run in `BEGIN IMMEDIATE` transactions: the write lock is taken up front,
which serialises claimers (no two can pick the same rows) and avoids the lock-upgrade error of
a transaction that reads first and writes later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from reelhouse.core.jobs.dbtime import SQLITE_FORMAT, sqlite_shift
from reelhouse.core.jobs.hotpath import (
    CLAIM_RETURNING,
    ClaimedTask,
    Completion,
    DriverConnections,
    Lease,
    claimed_task,
)
from reelhouse.core.jobs.jobsql import refresh_jobs_sql

NOW = f"strftime('{SQLITE_FORMAT}', 'now')"
LATER = f"strftime('{SQLITE_FORMAT}', 'now', ?)"  # parameter: sqlite_shift(seconds)
HOLDS_LEASE = f"tasks.status = 'running' AND tasks.lease_expires_at > {NOW}"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@cache
def claim_sql(kinds: int, capabilities: int) -> str:
    capability_ok = "required_capability IS NULL"
    if capabilities:
        capability_ok = f"({capability_ok} OR required_capability IN ({_marks(capabilities)}))"
    return f"""
UPDATE tasks SET
    status = 'running', lease_owner = ?, fence = fence + 1, lease_expires_at = {LATER},
    heartbeat_at = {NOW}, attempts = attempts + 1, started_at = {NOW}, updated_at = {NOW}
WHERE id IN (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_after <= {NOW} AND kind IN ({_marks(kinds)}) AND {capability_ok}
    ORDER BY priority DESC, run_after, id
    LIMIT ?
)
RETURNING {CLAIM_RETURNING}
"""


@cache
def start_jobs_sql(count: int) -> str:
    return (
        f"UPDATE jobs SET status = 'processing', updated_at = {NOW} WHERE status = 'queued' AND id IN ({_marks(count)})"
    )


RUNNING_OF_KIND = "SELECT count(*) FROM tasks WHERE kind = ? AND status = 'running'"


@cache
def heartbeat_sql(count: int) -> str:
    return f"""
WITH held(id, fence) AS (VALUES {", ".join(["(?, ?)"] * count)})
UPDATE tasks SET lease_expires_at = {LATER}, heartbeat_at = {NOW}
FROM held WHERE tasks.id = held.id AND tasks.fence = held.fence AND {HOLDS_LEASE}
RETURNING tasks.id
"""


@cache
def cancel_requested_sql(count: int) -> str:
    return f"SELECT id FROM tasks WHERE cancel_requested AND id IN ({_marks(count)})"


@cache
def complete_sql(count: int) -> str:
    return f"""
WITH done(id, fence, result) AS (VALUES {", ".join(["(?, ?, ?)"] * count)})
UPDATE tasks SET
    status = 'succeeded', result = done.result, progress = 1.0, progress_detail = NULL, finished_at = {NOW},
    last_error = NULL, error_class = NULL, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = {NOW}
FROM done WHERE tasks.id = done.id AND tasks.fence = done.fence AND {HOLDS_LEASE}
RETURNING tasks.id, tasks.job_id
"""


class SqliteHotPath:
    def __init__(self, connections: DriverConnections) -> None:
        self.connections = connections

    async def aclose(self) -> None:
        await self.connections.aclose()

    @asynccontextmanager
    async def _writing(self, stream: str) -> AsyncIterator[Any]:
        async with self.connections.use(stream) as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def claim(
        self,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
        capabilities: Sequence[str],
        global_limit: int | None,
    ) -> list[ClaimedTask]:
        async with self._writing("claim") as db:
            if global_limit is not None:
                [(running,)] = await db.execute_fetchall(RUNNING_OF_KIND, (kinds[0],))
                limit = min(limit, global_limit - running)
                if limit <= 0:
                    return []
            params = (owner, sqlite_shift(lease_seconds), *kinds, *capabilities, limit)
            rows = await db.execute_fetchall(claim_sql(len(kinds), len(capabilities)), params)
            job_ids = sorted({row[1] for row in rows})
            if job_ids:
                await db.execute(start_jobs_sql(len(job_ids)), job_ids)
        return sorted((claimed_task(row, owner) for row in rows), key=lambda t: t.id)

    async def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> set[int]:
        if not leases:
            return set()
        # The VALUES list comes first in the text, then the shift in SET.
        values: list[object] = [value for lease in leases for value in (lease.task_id, lease.fence)]
        values.append(sqlite_shift(lease_seconds))
        async with self.connections.use("heartbeat") as db:
            rows = await db.execute_fetchall(heartbeat_sql(len(leases)), values)
        return {row[0] for row in rows}

    async def cancel_requested(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        async with self.connections.use("cancel") as db:
            return {row[0] for row in await db.execute_fetchall(cancel_requested_sql(len(task_ids)), list(task_ids))}

    async def complete(self, done: Sequence[Completion]) -> set[int]:
        if not done:
            return set()
        params = [value for completion in done for value in completion]
        async with self._writing("complete") as db:
            rows = await db.execute_fetchall(complete_sql(len(done)), params)
            job_ids = sorted({row[1] for row in rows})
            if job_ids:
                await db.execute(refresh_jobs_sql("sqlite", len(job_ids)), job_ids)
        return {row[0] for row in rows}
