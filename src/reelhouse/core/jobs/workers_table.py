"""The `workers` table: who is running, with which capabilities, on what, and when last seen."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import workers
from reelhouse.core.db.types import utcnow


class WorkerRecord:
    def __init__(self, engine: AsyncEngine, worker_id: str) -> None:
        self.engine = engine
        self.worker_id = worker_id

    async def register(self, capabilities: list[str], kinds: list[str]) -> None:
        now = utcnow()
        values = dict(id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                      capabilities=capabilities, kinds=kinds, current_task_ids=[],
                      status="running", started_at=now, last_heartbeat=now)
        async with self.engine.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            stmt = insert(workers).values(**values)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[workers.c.id],
                set_={k: stmt.excluded[k] for k in values if k != "id"},
            ))

    async def heartbeat(self, task_ids: list[int]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(workers).where(workers.c.id == self.worker_id)
                               .values(last_heartbeat=utcnow(), current_task_ids=task_ids))

    async def _set_status(self, status: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(workers).where(workers.c.id == self.worker_id)
                               .values(status=status, last_heartbeat=utcnow(),
                                       **({"current_task_ids": []} if status == "stopped" else {})))

    async def mark_stopping(self) -> None:
        await self._set_status("stopping")

    async def mark_stopped(self) -> None:
        await self._set_status("stopped")


async def list_workers(engine: AsyncEngine, stale_after: timedelta) -> list[dict]:
    """Workers as `/v1/workers` shows them; `healthy` means a heartbeat within `stale_after`."""
    cutoff = utcnow() - stale_after
    async with engine.connect() as conn:
        rows = (await conn.execute(select(workers).order_by(workers.c.id))).mappings().all()
    return [
        {
            "id": row["id"], "hostname": row["hostname"], "pid": row["pid"],
            "capabilities": row["capabilities"], "kinds": row["kinds"], "status": row["status"],
            "current_task_ids": row["current_task_ids"],
            "current_job": row["current_task_ids"][0] if row["current_task_ids"] else None,
            "started_at": row["started_at"].isoformat(),
            "last_heartbeat": row["last_heartbeat"].isoformat(),
            "healthy": row["status"] != "stopped" and row["last_heartbeat"] >= cutoff,
        }
        for row in rows
    ]
