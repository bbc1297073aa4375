"""What a finished job shows: its last task's result, no stale progress detail on finished
tasks, and a dead task's log line without a retry that will not come."""

from __future__ import annotations

import logging

from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry

from .test_queue import job_row, run_worker_until, task_row


async def test_a_completed_job_carries_its_last_tasks_result(engine):
    registry = TaskRegistry()

    async def first(ctx):
        await ctx.report_progress(0.5, force=True, stage="uploading", percent=0)
        await ctx.enqueue_next("step.two", {"from": ctx.task.id})
        return {"step": 1}

    async def second(ctx):
        await ctx.report_progress(0.9, force=True, stage="finishing")
        return {"asset_id": 42, "from": ctx.payload["from"]}

    registry.register(TaskKind("step.one", first))
    registry.register(TaskKind("step.two", second))
    enqueued = await TaskQueue(engine).enqueue("step.one", {})

    async def done() -> bool:
        return (await job_row(engine, enqueued.job_id))["status"] == states.JOB_COMPLETED

    await run_worker_until(engine, registry, done)
    job = await job_row(engine, enqueued.job_id)
    assert job["result"] == {"asset_id": 42, "from": enqueued.task_id}
    finished = await task_row(engine, enqueued.task_id)
    assert finished["progress"] == 1.0 and finished["progress_detail"] is None, "no stale 'uploading 0 %'"


async def test_a_dead_tasks_log_line_promises_no_retry(engine, caplog):
    registry = TaskRegistry()

    async def broken(ctx):
        raise RuntimeError("still broken")

    registry.register(TaskKind("always.broken", broken, max_attempts=1))
    enqueued = await TaskQueue(engine).enqueue("always.broken", {}, max_attempts=1)

    async def dead() -> bool:
        return (await task_row(engine, enqueued.task_id))["status"] == states.DEAD

    with caplog.at_level(logging.WARNING, logger="reelhouse.worker"):
        await run_worker_until(engine, registry, dead)
    [line] = [r for r in caplog.records if "still broken" in r.getMessage()]
    assert line.getMessage().startswith("task dead") and not hasattr(line, "retry_in_s")
