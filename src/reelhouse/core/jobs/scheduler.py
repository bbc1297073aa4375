"""Periodic tasks, fired once per period however many schedulers run.

Each period has a start time (`floor(now / every) * every`). A scheduler that sees a new period
inserts `(name, period_start)` into `periodic_runs`; the primary key lets exactly one insert win,
and only the winner enqueues, in the same transaction. "Now" is the database's clock, so
schedulers on hosts whose clocks disagree still agree on the period. The jobs are system jobs:
hidden from listings unless asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import periodic_runs
from reelhouse.core.jobs.dbtime import database_time, db_now
from reelhouse.core.jobs.queue import TaskQueue

log = logging.getLogger("reelhouse.scheduler")


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    kind: str
    every: timedelta
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0


def period_start(now: datetime, every: timedelta) -> datetime:
    seconds = every.total_seconds()
    return datetime.fromtimestamp((now.timestamp() // seconds) * seconds, tz=UTC)


class Scheduler:
    def __init__(self, engine: AsyncEngine, entries: list[PeriodicTask]) -> None:
        self.engine = engine
        self.entries = list(entries)
        self.queue = TaskQueue(engine)
        self._fired: dict[str, datetime] = {}

    def add(self, entry: PeriodicTask) -> None:
        self.entries.append(entry)

    async def tick(self, now: datetime | None = None) -> list[int]:
        """Fire every entry whose current period has not fired yet; returns new task ids."""
        now = now or await database_time(self.engine)
        fired = []
        for entry in self.entries:
            start = period_start(now, entry.every)
            if self._fired.get(entry.name) == start:
                continue  # this process already knows the period is taken
            task_id = await self._claim_period(entry, start)
            self._fired[entry.name] = start
            if task_id is not None:
                fired.append(task_id)
        return fired

    async def _claim_period(self, entry: PeriodicTask, start: datetime) -> int | None:
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                won = (
                    await conn.execute(
                        insert(periodic_runs)
                        .values(name=entry.name, period_start=start, created_at=db_now())
                        .on_conflict_do_nothing()
                        .returning(periodic_runs.c.name)
                    )
                ).first()
                if won is None:
                    return None
                enqueued = await self.queue.enqueue(
                    entry.kind,
                    {**entry.payload, "period_start": start.isoformat()},
                    priority=entry.priority,
                    idempotency_key=f"periodic:{entry.name}:{start.isoformat()}",
                    system=True,
                    conn=conn,
                )
                await conn.execute(
                    periodic_runs.update()
                    .where(periodic_runs.c.name == entry.name, periodic_runs.c.period_start == start)
                    .values(task_id=enqueued.task_id)
                )
                log.info(
                    "periodic task fired",
                    extra={"component": "scheduler", "periodic": entry.name, "task_id": enqueued.task_id},
                )
                return enqueued.task_id
        finally:
            await conn.close()

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # a database hiccup must not kill the scheduler
                log.exception("scheduler tick failed", extra={"component": "scheduler"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
