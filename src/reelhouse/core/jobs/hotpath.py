"""The statements every task passes through, sent straight to the driver.

Claim, heartbeat, cancel poll and completion run for every task, so they skip SQLAlchemy's
statement construction and result machinery (it was about a quarter of a worker's CPU):
each is written out once per backend and handed to asyncpg (prepared and cached by the
driver) or to SQLite. Everything else in the engine uses SQLAlchemy Core.

Both backends follow the same rules:
- time is the database's (`now()`, or `strftime` in the stored text format);
- a write made for a run is a compare-and-set on its fencing token: same `fence`, still
  `running`, lease not yet expired by the database's clock;
- job rows are locked in id order before a job's status is recomputed from its tasks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@dataclass(frozen=True)
class Lease:
    """What a run holds: its task, its fencing token and who claimed it."""

    task_id: int
    fence: int
    owner: str
    attempt: int = 0


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
    fence: int = 0
    owner: str = ""
    lost_attempts: int = 0
    max_lost_attempts: int = 5
    # The enqueuer's W3C trace context (core.telemetry.tracing.task_context continues it).
    trace_context: str | None = None

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.fence, self.owner, self.attempts)


# (task id, fence, JSON text of the result or None)
Completion = tuple[int, int, str | None]


class DriverConnections:
    """Driver connections for the hot path, from the engine's pool.

    Unheld (the default), every call checks a connection out and back in. Held (a worker), the
    claim and the completion streams each keep one connection for the worker's life: checkout,
    reset and return cost about as much Python as the statements themselves. A held connection
    that saw any error is invalidated (the pool never gets it back) and replaced on next use.
    """

    def __init__(self, engine: AsyncEngine, *, hold: bool = False) -> None:
        self.engine = engine
        self.hold = hold
        self._held: dict[str, tuple[AsyncConnection, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def use(self, stream: str) -> AsyncIterator[Any]:
        if not self.hold:
            async with self.engine.connect() as conn:
                yield (await conn.get_raw_connection()).driver_connection
            return
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            held = self._held.get(stream)
            if held is None:
                conn = await self.engine.connect()
                held = self._held[stream] = (conn, (await conn.get_raw_connection()).driver_connection)
            try:
                yield held[1]
            except BaseException:
                del self._held[stream]
                await asyncio.shield(_discard(held[0]))
                raise

    async def aclose(self) -> None:
        held, self._held = self._held, {}
        for conn, _ in held.values():
            await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    finally:
        await conn.close()


class HotPath(Protocol):
    async def claim(
        self,
        owner: str,
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
        capabilities: Sequence[str],
        global_limit: int | None,
    ) -> list[ClaimedTask]: ...

    async def heartbeat(self, leases: Sequence[Lease], lease_seconds: float) -> set[int]: ...

    async def cancel_requested(self, task_ids: Sequence[int]) -> set[int]: ...

    async def complete(self, done: Sequence[Completion]) -> set[int]: ...

    async def aclose(self) -> None: ...


def result_json(result: Any) -> str | None:
    return None if result is None else json.dumps(result, separators=(",", ":"))


def claimed_task(row: Sequence[Any], owner: str) -> ClaimedTask:
    payload = row[3]
    if isinstance(payload, str):
        payload = json.loads(payload)
    return ClaimedTask(
        id=row[0],
        job_id=row[1],
        kind=row[2],
        payload=payload,
        attempts=row[4],
        max_attempts=row[5],
        correlation_id=row[6],
        timeout_seconds=row[7],
        fence=row[8],
        owner=owner,
        lost_attempts=row[9],
        max_lost_attempts=row[10],
        trace_context=row[11] if len(row) > 11 else None,
    )


CLAIM_RETURNING = (
    "id, job_id, kind, payload, attempts, max_attempts, correlation_id, timeout_seconds, fence,"
    " lost_attempts, max_lost_attempts, trace_context"
)


def hot_path(engine: AsyncEngine, *, hold: bool = False) -> HotPath:
    connections = DriverConnections(engine, hold=hold)
    if engine.dialect.name == "postgresql":
        from reelhouse.core.jobs.hotpath_postgres import PostgresHotPath

        return PostgresHotPath(connections)
    from reelhouse.core.jobs.hotpath_sqlite import SqliteHotPath

    return SqliteHotPath(connections)
