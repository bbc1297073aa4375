"""`waiting_for` for job lists: the NATS kernel's "waiting for a worker with capability X" mark
on a queued task, read for many jobs in one query (the encode job list shows it)."""

from __future__ import annotations

from sqlalchemy import update

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import control
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.remote.kernel import WAITING_STAGE, waiting_text


async def mark(engine, task_id: int, detail) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(progress_detail=detail))


async def test_waiting_for_jobs_reports_only_queued_tasks_marked_waiting(engine):
    queue = TaskQueue(engine)
    waiting = await queue.enqueue("encode.transcode", required_capability="h264_nvenc")
    second = await queue.enqueue("encode.segment", job_id=waiting.job_id)
    plain = await queue.enqueue("encode.transcode")
    progressing = await queue.enqueue("encode.transcode")
    claimed = await queue.enqueue("other.kind", required_capability="h264_qsv")
    text = waiting_text("h264_nvenc")
    await mark(engine, waiting.task_id, {"stage": WAITING_STAGE, "waiting_for": text, "capability": "h264_nvenc"})
    await mark(engine, second.task_id, {"stage": WAITING_STAGE, "waiting_for": waiting_text("cpu")})
    await mark(engine, progressing.task_id, {"stage": "probing"})  # a detail, but no wait
    await mark(engine, claimed.task_id, {"stage": WAITING_STAGE, "waiting_for": waiting_text("h264_qsv")})
    async with engine.begin() as conn:  # a running task's stale mark is not a wait
        await conn.execute(update(tasks).where(tasks.c.id == claimed.task_id).values(status="running"))

    ids = [waiting.job_id, plain.job_id, progressing.job_id, claimed.job_id]
    # One text per job: its first waiting task's, as GET /v1/jobs/{id} says it.
    assert await control.waiting_for_jobs(engine, ids) == {waiting.job_id: text}
    assert (await control.get_job(engine, waiting.job_id))["waiting_for"] == text
    assert (await control.get_job(engine, claimed.job_id))["waiting_for"] is None
    assert await control.waiting_for_jobs(engine, []) == {}

    await mark(engine, waiting.task_id, None)  # the kernel cleared it: a worker can run it now
    assert await control.waiting_for_jobs(engine, ids) == {waiting.job_id: waiting_text("cpu")}
