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
from reelhouse.core.jobs.registry import SettleHook, TaskKind, TaskRegistry
from tests.integration.jobs.test_fencing import SHORT, expire_and_reap

LEASE = timedelta(seconds=30)


def queue_settling(engine, settle: SettleHook, *kinds: str) -> TaskQueue:
    """A queue whose transitions settle `kinds` with `settle`, as a worker's or kernel's does."""

    async def handler(ctx: Any) -> None:
        return None

    registry = TaskRegistry()
    for name in kinds:
        registry.register(TaskKind(name, handler, settle=settle))
    return TaskQueue(engine, settle_for=registry.settle_hook)


async def task_row(engine, task_id: int) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().one())


async def test_the_hook_runs_inside_the_transaction_that_ends_the_task(engine):
    seen: list[tuple[str, str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        inside = (await conn.execute(select(tasks.c.status).where(tasks.c.id == run.id))).scalar_one()
        # Another connection still reads the task as running: the end is not committed yet.
        outside = (await task_row(engine, run.id))["status"]
        seen.append((inside, outside, f"{job_id}:{status}:{reason}"))

    queue = queue_settling(engine, settle, "settled")
    enq = await queue.enqueue("settled", max_attempts=1)
    [run] = await queue.claim("w", ["settled"], 1, LEASE)
    async with asyncio.timeout(30):
        assert await queue.fail_permanently(run.lease, "broken input")
    assert seen == [(states.FAILED, states.RUNNING, f"{enq.job_id}:failed:broken input")]
    assert (await get_job(engine, enq.job_id))["status"] == states.JOB_FAILED


async def test_the_hook_runs_for_a_dead_or_cancelled_end_and_not_for_a_retry(engine):
    calls: list[tuple[str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        calls.append((status, reason))

    queue = queue_settling(engine, settle, "flaky", "stopped")

    await queue.enqueue("flaky", max_attempts=2)
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 1", timedelta(0)) == states.QUEUED
    assert calls == []
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 2", timedelta(0)) == states.DEAD
    cancelled = await queue.enqueue("stopped")
    [run] = await queue.claim("w", ["stopped"], 1, LEASE)
    await request_cancel(engine, cancelled.task_id)
    assert await queue.mark_cancelled(run.lease)
    assert calls == [(states.DEAD, "boom 2"), (states.CANCELLED, "cancelled")]


async def test_a_failing_hook_is_undone_and_the_end_of_the_task_stands(engine, caplog):
    async def broken(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        await conn.execute(update(tasks).where(tasks.c.job_id == job_id).values(last_error="written by the hook"))
        raise RuntimeError("the hook broke")

    queue = queue_settling(engine, broken, "settled")
    enq = await queue.enqueue("settled", max_attempts=1)
    [run] = await queue.claim("w", ["settled"], 1, LEASE)
    assert await queue.fail_permanently(run.lease, "broken input")
    row = await task_row(engine, enq.task_id)
    assert (row["status"], row["last_error"]) == (states.FAILED, "broken input")
    assert any("settle hook failed" in r.getMessage() for r in caplog.records)


async def test_the_reaper_settles_the_tasks_it_ends(engine):
    """A task whose worker keeps dying ends dead, a lost task with a cancel request ends
    cancelled: both through the kind's hook, looked up by the registry."""
    calls: list[tuple[int, str, str]] = []

    async def settle(conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        calls.append((job_id, status, reason))

    unsettled = TaskQueue(engine)
    dead = await unsettled.enqueue("crasher", max_lost_attempts=1)
    await unsettled.claim("w1", ["crasher"], 1, SHORT)
    await expire_and_reap(unsettled, engine)  # a queue without a lookup ends it, unsettled
    assert (await task_row(engine, dead.task_id))["status"] == states.DEAD and calls == []

    queue = queue_settling(engine, settle, "crasher")

    again = await queue.enqueue("crasher", max_lost_attempts=1)
    await queue.claim("w2", ["crasher"], 1, SHORT)
    cancelled = await queue.enqueue("crasher", max_lost_attempts=5)
    await queue.claim("w3", ["crasher"], 1, SHORT)
    await request_cancel(engine, cancelled.task_id)
    reaped = 0
    async with asyncio.timeout(30):  # the leases are 0.2 s
        while reaped < 2:
            reaped += await queue.reap_expired_leases()
            await asyncio.sleep(0.05)
    assert sorted(calls) == sorted(
        [
            (again.job_id, states.DEAD, "lease expired: worker lost 1 times (max_lost_attempts)"),
            (cancelled.job_id, states.CANCELLED, "cancelled (its worker was lost)"),
        ]
    )
