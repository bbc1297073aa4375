"""A kind's settle hook (e.g. encode marking an asset failed) runs inside the transaction that
ends the task, on both backends: nobody sees the task failed before its domain rows say so, a
failing hook does not undo the task's end, and tasks ended by the reaper are settled too."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.control import get_job, request_cancel
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from tests.integration.jobs.test_fencing import SHORT, expire_and_reap

LEASE = timedelta(seconds=30)


async def task_row(engine, task_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().one())


async def test_the_hook_runs_inside_the_transaction_that_ends_the_task(engine):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("settled", max_attempts=1)
    [run] = await queue.claim("w", ["settled"], 1, LEASE)
    seen: list[tuple[str, str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        inside = (await conn.execute(select(tasks.c.status).where(tasks.c.id == run.id))).scalar_one()
        # Another connection still reads the task as running: the end is not committed yet.
        outside = (await task_row(engine, run.id))["status"]
        seen.append((inside, outside, f"{job_id}:{status}:{reason}"))

    async with asyncio.timeout(30):
        assert await queue.fail_permanently(run.lease, "broken input", settle=settle)
    assert seen == [(states.FAILED, states.RUNNING, f"{enq.job_id}:failed:broken input")]
    assert (await get_job(engine, enq.job_id))["status"] == states.JOB_FAILED


async def test_the_hook_runs_for_a_dead_or_cancelled_end_and_not_for_a_retry(engine):
    queue = TaskQueue(engine)
    calls: list[tuple[str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        calls.append((status, reason))

    await queue.enqueue("flaky", max_attempts=2)
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 1", timedelta(0), settle=settle) == states.QUEUED
    assert calls == []
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 2", timedelta(0), settle=settle) == states.DEAD
    cancelled = await queue.enqueue("stopped")
    [run] = await queue.claim("w", ["stopped"], 1, LEASE)
    await request_cancel(engine, cancelled.task_id)
    assert await queue.mark_cancelled(run.lease, settle=settle)
    assert calls == [(states.DEAD, "boom 2"), (states.CANCELLED, "cancelled")]


async def test_a_failing_hook_is_undone_and_the_end_of_the_task_stands(engine, caplog):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("settled", max_attempts=1)
    [run] = await queue.claim("w", ["settled"], 1, LEASE)

    async def broken(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        await conn.execute(update(tasks).where(tasks.c.id == run.id).values(last_error="written by the hook"))
        raise RuntimeError("the hook broke")

    assert await queue.fail_permanently(run.lease, "broken input", settle=broken)
    row = await task_row(engine, enq.task_id)
    assert (row["status"], row["last_error"]) == (states.FAILED, "broken input")
    assert any("settle hook failed" in r.getMessage() for r in caplog.records)


async def test_the_reaper_settles_the_tasks_it_ends(engine):
    """A task whose worker keeps dying ends dead, a lost task with a cancel request ends
    cancelled: both through the kind's hook, looked up by the registry."""
    calls: list[tuple[int, str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        calls.append((job_id, status, reason))

    async def handler(ctx: Any) -> None:
        return None

    registry = TaskRegistry()
    registry.register(TaskKind("crasher", handler, settle=settle))
    queue = TaskQueue(engine)
    dead = await queue.enqueue("crasher", max_lost_attempts=1)
    await queue.claim("w1", ["crasher"], 1, SHORT)
    await expire_and_reap(queue, engine)  # without a lookup: the old call still works, unsettled
    assert (await task_row(engine, dead.task_id))["status"] == states.DEAD and calls == []

    again = await queue.enqueue("crasher", max_lost_attempts=1)
    await queue.claim("w2", ["crasher"], 1, SHORT)
    cancelled = await queue.enqueue("crasher", max_lost_attempts=5)
    await queue.claim("w3", ["crasher"], 1, SHORT)
    await request_cancel(engine, cancelled.task_id)
    reaped = 0
    async with asyncio.timeout(30):  # the leases are 0.2 s
        while reaped < 2:
            reaped += await queue.reap_expired_leases(registry.settle_hook)
            await asyncio.sleep(0.05)
    assert sorted(calls) == sorted(
        [
            (again.job_id, states.DEAD, "lease expired: worker lost 1 times (max_lost_attempts)"),
            (cancelled.job_id, states.CANCELLED, "cancelled (its worker was lost)"),
        ]
    )
