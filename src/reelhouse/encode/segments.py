"""Segment-parallel encode bookkeeping: how many pieces (from the idle capable workers and the
source length), the `encode_segments` rows, and progress/ETA over the pieces.

The join is the last piece's: each `encode.segment` task marks its row done inside its fenced
transaction, which locks the job row first (PostgreSQL) or holds SQLite's write lock, so two
pieces finishing at once are serialised and exactly one of them sees none left and enqueues
the stitch (WebEncode checked for pending tasks outside any lock and could stitch twice or never).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.models import tasks, workers
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.media.segments import Piece
from reelhouse.encode.models import SEGMENT_DONE, SEGMENT_PENDING, assets, encode_segments


async def idle_capable_workers(
    engine: AsyncEngine, kind: str, *, stale_after: timedelta, ignore_task: int | None = None
) -> int:
    """Workers that take `kind`, heartbeat recently, are not stopping, and run nothing (or
    only `ignore_task`, the probe deciding this, whose worker is about to be free)."""
    async with engine.connect() as conn:
        cutoff = await database_time(conn) - stale_after
        rows = (
            await conn.execute(
                select(workers.c.kinds, workers.c.current_task_ids).where(
                    workers.c.status == "running", workers.c.last_heartbeat >= cutoff
                )
            )
        ).all()
    idle = 0
    for row in rows:
        if kind not in (row.kinds or []):
            continue
        busy = {int(t) for t in (row.current_task_ids or [])} - ({ignore_task} if ignore_task else set())
        if not busy:
            idle += 1
    return idle


def segment_count(idle_workers: int, *, per_worker: int, maximum: int, mode: str) -> int:
    """How many pieces to aim for; 1 means the single-task path."""
    if mode == "never":
        return 1
    workers_ = max(idle_workers, 1) if mode == "always" else idle_workers
    if workers_ < 2 and mode != "always":
        return 1
    return max(1, min(workers_ * per_worker, maximum))


async def create_rows(conn: AsyncConnection, asset_id: int, rungs: list[str], pieces: list[Piece]) -> bool:
    """The asset's piece rows, in the probe's fenced transaction; False if they exist already
    (an earlier run of the probe committed them, with their tasks)."""
    existing = (
        await conn.execute(
            select(func.count()).select_from(encode_segments).where(encode_segments.c.asset_id == asset_id)
        )
    ).scalar_one()
    if existing:
        return False
    await conn.execute(
        encode_segments.insert(),
        [
            {
                "asset_id": asset_id,
                "rung": rung,
                "idx": piece.index,
                "start_seconds": piece.start,
                "end_seconds": piece.end,
                "status": SEGMENT_PENDING,
            }
            for rung in rungs
            for piece in pieces
        ],
    )
    return True


async def mark_done(
    conn: AsyncConnection, asset_id: int, rung: str, idx: int, key: str, size: int, seconds: float
) -> int:
    """Record a finished piece; returns how many of the asset's pieces are still pending."""
    await conn.execute(
        update(encode_segments)
        .where(encode_segments.c.asset_id == asset_id, encode_segments.c.rung == rung, encode_segments.c.idx == idx)
        .values(status=SEGMENT_DONE, storage_key=key, size_bytes=size, encode_seconds=seconds)
    )
    pending = await conn.execute(
        select(func.count())
        .select_from(encode_segments)
        .where(encode_segments.c.asset_id == asset_id, encode_segments.c.status != SEGMENT_DONE)
    )
    return int(pending.scalar_one())


async def rows_of(conn: AsyncConnection, asset_id: int) -> list[Any]:
    query = select(encode_segments).where(encode_segments.c.asset_id == asset_id)
    return list((await conn.execute(query.order_by(encode_segments.c.rung, encode_segments.c.idx))).all())


async def job_segments(engine: AsyncEngine, job_id: int) -> dict[str, Any] | None:
    """Progress and ETA of a segment-parallel job over all its pieces, None for a job encoded
    in one task per profile.

    Work is counted in media seconds of every (rung, piece): done pieces in full, running ones
    by their task's progress. The rate is the work done per second since the first piece task
    started (every worker together), so the ETA shrinks as workers join."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    encode_segments.c.status,
                    encode_segments.c.start_seconds,
                    encode_segments.c.end_seconds,
                    assets.c.duration,
                )
                .join(assets, assets.c.id == encode_segments.c.asset_id)
                .where(assets.c.job_id == job_id)
            )
        ).all()
        if not rows:
            return None
        running = (
            await conn.execute(
                select(tasks.c.progress, tasks.c.payload, tasks.c.started_at).where(
                    tasks.c.job_id == job_id, tasks.c.kind == "encode.segment"
                )
            )
        ).all()
        now = await database_time(conn)
    total = done = 0.0
    for row in rows:
        length = (
            row.end_seconds if row.end_seconds is not None else (row.duration or row.start_seconds)
        ) - row.start_seconds
        total += max(length, 0.0)
        if row.status == SEGMENT_DONE:
            done += max(length, 0.0)
    in_flight = 0.0
    started = [t.started_at for t in running if t.started_at is not None]
    for task in running:
        piece = task.payload.get("piece") or {}
        if piece.get("length") and task.progress and task.progress < 1.0:
            in_flight += piece["length"] * float(task.progress)
    work = min(done + in_flight, total)
    elapsed = (now - min(started)).total_seconds() if started else 0.0
    rate = work / elapsed if elapsed > 0 and work > 0 else None
    return {
        "pieces": len(rows),
        "pieces_done": sum(1 for row in rows if row.status == SEGMENT_DONE),
        "media_seconds": round(total, 3),
        "progress": round(work / total, 4) if total else 0.0,
        "eta_seconds": round((total - work) / rate, 1) if rate else None,
    }
