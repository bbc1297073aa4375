"""A stream going live and ending: the state flip, the live job (transcode, one restream task
per enabled destination) and the recording row, in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.live import kinds
from reelhouse.live.services import LiveServices

LIVE_TASK_OPTIONS: dict[str, Any] = {"max_attempts": 30, "max_lost_attempts": 30}
# A transcode task in one of these has stopped for good: no run of it comes again.
ENDED_BADLY = (states.FAILED, states.DEAD, states.CANCELLED)


async def transcodes_of(conn: AsyncConnection, job_id: int) -> list[Any]:
    """The live transcode tasks of a session's job, first first (the monitor adds replacements)."""
    query = (
        select(tasks.c.id, tasks.c.status, tasks.c.last_error)
        .where(tasks.c.job_id == job_id, tasks.c.kind == kinds.KIND_TRANSCODE)
        .order_by(tasks.c.id)
    )
    return list((await conn.execute(query)).all())


async def start_live_tasks(services: LiveServices, conn: AsyncConnection, stream: dict[str, Any], session: int) -> int:
    queue = TaskQueue(services.store.engine)
    stream_id = int(stream["id"])
    job_id = await queue.create_job(
        conn, kinds.JOB_KIND, {"stream_id": stream_id, "session": session, "title": stream["title"]},
        user_id=stream["user_id"],
    )  # fmt: skip
    await queue.add_task(
        conn, job_id, kinds.KIND_TRANSCODE, {"stream_id": stream_id, "session": session},
        idempotency_key=f"live:{stream_id}:{session}:transcode", required_capability=kinds.TRANSCODE_CAPABILITY,
        priority=10, **LIVE_TASK_OPTIONS,
    )  # fmt: skip
    for destination in await services.store.destinations_of(stream_id, conn):
        if destination["enabled"]:
            await enqueue_restream(conn, job_id, stream_id, session, int(destination["id"]))
    await services.store.add_recording(conn, stream_id, session)
    return job_id


async def enqueue_restream(
    conn: AsyncConnection, job_id: int, stream_id: int, session: int, destination_id: int
) -> int:
    queue = TaskQueue(conn.engine)
    return await queue.add_task(
        conn, job_id, kinds.KIND_RESTREAM,
        {"stream_id": stream_id, "session": session, "destination_id": destination_id},
        idempotency_key=f"live:{stream_id}:{session}:restream:{destination_id}:{utcnow().timestamp()}",
        priority=10, **LIVE_TASK_OPTIONS,
    )  # fmt: skip


async def go_live(services: LiveServices, conn: AsyncConnection, stream: dict[str, Any], client: str) -> int:
    session = int(stream["session"]) + 1
    now = utcnow()
    await services.store.set_stream(
        conn, int(stream["id"]), is_live=True, session=session, ingest_client=client[:32], live_since=now,
        telemetry=None, telemetry_at=None,
    )  # fmt: skip
    job_id = await start_live_tasks(services, conn, {**stream, "session": session}, session)
    await services.store.set_stream(conn, int(stream["id"]), job_id=job_id)
    return session


async def go_offline(services: LiveServices, conn: AsyncConnection, stream_id: int) -> None:
    await services.store.set_stream(
        conn, stream_id, is_live=False, ingest_client=None, last_live_at=utcnow(), live_since=None
    )
    # The transcode closes the playlists and hands the recording to live.finalize when the
    # stream ends. When the session's last transcode had already stopped for good (and the
    # monitor had given up on it), one more run does just that: it finds the stream ended and
    # never starts ffmpeg. Without it the recording would never become a VOD.
    stream = await services.store.get_stream(stream_id, conn)
    rows = await transcodes_of(conn, stream["job_id"]) if stream["job_id"] is not None else []
    if rows and rows[-1].status in ENDED_BADLY:
        session = int(stream["session"])
        await TaskQueue(conn.engine).enqueue(
            kinds.KIND_TRANSCODE, {"stream_id": stream_id, "session": session, "closing": True},
            job_id=stream["job_id"], conn=conn, priority=10,
            idempotency_key=f"live:{stream_id}:{session}:transcode:closing",
            required_capability=kinds.TRANSCODE_CAPABILITY, **LIVE_TASK_OPTIONS,
        )  # fmt: skip
