"""The `workers` table: who is running, with which capabilities, on what, and when last seen."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import case, false, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse import __version__
from reelhouse.core.db.models import workers
from reelhouse.core.jobs.dbtime import database_time, db_now


class WorkerRecord:
    def __init__(self, engine: AsyncEngine, worker_id: str) -> None:
        self.engine = engine
        self.worker_id = worker_id

    async def register(self, capabilities: list[str], kinds: list[str]) -> None:
        now = db_now()
        values = {
            "id": self.worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "capabilities": capabilities,
            "kinds": kinds,
            "current_task_ids": [],
            "status": "running",
            "started_at": now,
            "last_heartbeat": now,
            "transport": "database",
            "version": __version__,
            "info": {"cpu_count": os.cpu_count()},
            "drain_requested": False,
        }
        async with self.engine.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            stmt = insert(workers).values(**values)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[workers.c.id],
                    set_={k: stmt.excluded[k] for k in values if k != "id"},
                )
            )

    async def heartbeat(self, task_ids: list[int]) -> bool:
        """Record liveness; returns whether a drain was requested for this worker."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(workers)
                    .where(workers.c.id == self.worker_id)
                    .values(last_heartbeat=db_now(), current_task_ids=task_ids)
                    .returning(workers.c.drain_requested)
                )
            ).first()
        return bool(row and row.drain_requested)

    async def _set_status(self, status: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(workers)
                .where(workers.c.id == self.worker_id)
                .values(
                    status=status,
                    last_heartbeat=db_now(),
                    **({"current_task_ids": []} if status in ("stopped", "drained") else {}),
                )
            )

    async def mark_stopping(self) -> None:
        await self._set_status("stopping")

    async def mark_stopped(self, *, drained: bool = False) -> None:
        await self._set_status("drained" if drained else "stopped")
        if drained:  # the next start of this worker takes work again
            async with self.engine.begin() as conn:
                await conn.execute(update(workers).where(workers.c.id == self.worker_id).values(drain_requested=False))


async def list_workers(engine: AsyncEngine, stale_after: timedelta) -> list[dict]:
    """Workers as `/v1/workers` shows them; `healthy` means a heartbeat within `stale_after`."""
    async with engine.connect() as conn:
        cutoff = await database_time(conn) - stale_after
        rows = (await conn.execute(select(workers).order_by(workers.c.id))).mappings().all()
    return [
        {
            "id": row["id"],
            "hostname": row["hostname"],
            "pid": row["pid"],
            "capabilities": row["capabilities"],
            "kinds": row["kinds"],
            "status": row["status"],
            "current_task_ids": row["current_task_ids"],
            "current_job": row["current_task_ids"][0] if row["current_task_ids"] else None,
            "started_at": row["started_at"].isoformat(),
            "last_heartbeat": row["last_heartbeat"].isoformat(),
            "healthy": row["status"] in ("running", "stopping", "draining") and row["last_heartbeat"] >= cutoff,
            "transport": row["transport"],
            "version": row["version"],
            "info": row["info"] or {},
            "drain_requested": bool(row["drain_requested"]),
        }
        for row in rows
    ]


async def request_drain(engine: AsyncEngine, worker_id: str) -> bool:
    """Ask a worker to finish its current tasks and take no more; False if it is unknown."""
    async with engine.begin() as conn:
        result = await conn.execute(update(workers).where(workers.c.id == worker_id).values(drain_requested=True))
    return bool(result.rowcount)


async def upsert_remote(engine: AsyncEngine, entry: dict) -> None:
    """Mirror a NATS worker's registry entry (its heartbeat in the KV bucket) into the table,
    stamped with the database's now."""
    now = db_now()
    values = {
        "id": str(entry["id"])[:255],
        "hostname": str(entry.get("hostname", ""))[:255],
        "pid": int(entry.get("pid", 0)),
        "capabilities": list(entry.get("capabilities", [])),
        "kinds": list(entry.get("kinds", [])),
        "current_task_ids": [int(t) for t in entry.get("current_task_ids", [])],
        "status": str(entry.get("status", "running"))[:16],
        "started_at": now,
        "last_heartbeat": now,
        "transport": "nats",
        "version": str(entry.get("version", ""))[:64] or None,
        "info": dict(entry.get("info", {})),
    }
    async with engine.begin() as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(workers).values(**values, drain_requested=bool(entry.get("drain_requested", False)))
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[workers.c.id],
                set_={k: stmt.excluded[k] for k in values if k not in ("id", "started_at")}
                # A request stays until the worker reports it drained (its next start works).
                | {
                    "drain_requested": case(
                        (stmt.excluded.status == "drained", false()),
                        else_=workers.c.drain_requested | stmt.excluded.drain_requested,
                    )
                },
            )
        )


async def mark_remote_gone(engine: AsyncEngine, present: set[str]) -> list[str]:
    """NATS workers whose registry entry expired (no heartbeat within NATS_WORKER_TTL)."""
    async with engine.begin() as conn:
        rows = (
            (
                await conn.execute(
                    select(workers.c.id).where(
                        workers.c.transport == "nats", workers.c.status.in_(["running", "stopping", "draining"])
                    )
                )
            )
            .scalars()
            .all()
        )
        gone = [w for w in rows if w not in present]
        if gone:
            await conn.execute(update(workers).where(workers.c.id.in_(gone)).values(status="lost", current_task_ids=[]))
    return gone
