"""Fencing tokens and lost runs, on both backends: a run that lost its lease can change
nothing; a lost run is not a failed attempt; the history shows it."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from reelhouse.core.db.models import task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.control import get_job
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.errors import LeaseLost
from reelhouse.core.jobs.queue import TaskQueue

LEASE = timedelta(seconds=30)
SHORT = timedelta(seconds=0.2)


def context(queue: TaskQueue, task) -> TaskContext:
    return TaskContext(task=task, queue=queue, owner=task.owner, logger=logging.getLogger("test"), progress_interval=0)


async def expire_and_reap(queue: TaskQueue, engine) -> None:
    """Wait on the database's clock until the short lease is over, then reap."""
    async with engine.connect() as conn:
        until = (await conn.execute(select(tasks.c.lease_expires_at).where(tasks.c.status == "running"))).scalar()
    while until is not None and await database_time(engine) <= until:
        await asyncio.sleep(0.05)
    assert await queue.reap_expired_leases() >= 1


async def test_a_run_that_lost_its_lease_can_change_nothing(engine, caplog):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("work")
    [stale] = await queue.claim("paused-worker", ["work"], 1, SHORT)
    await expire_and_reap(queue, engine)
    [current] = await queue.claim("live-worker", ["work"], 1, LEASE)
    assert current.fence == stale.fence + 1
    old, new = context(queue, stale), context(queue, current)

    caplog.set_level(logging.WARNING, logger="reelhouse.fencing")
    with pytest.raises(LeaseLost):
        await old.report_progress(0.5, stage="late")
    with pytest.raises(LeaseLost):
        await old.enqueue_next("work.next", {})
    with pytest.raises(LeaseLost):
        async with old.fenced("write a side effect") as conn:
            await conn.execute(text("SELECT 1"))
    with pytest.raises(LeaseLost):
        await old.check_lease("upload a file")
    assert await queue.heartbeat([stale.lease], LEASE) == set()
    assert not await queue.succeed(stale.lease, {"by": "stale"})
    assert not await queue.fail_permanently(stale.lease, "stale says broken")
    assert await queue.retry_later(stale.lease, "stale says retry", timedelta(0)) is None
    assert not await queue.mark_cancelled(stale.lease)
    refusals = [r for r in caplog.records if "stale run refused" in r.getMessage()]
    assert len(refusals) == 4 and all(r.fence == stale.fence for r in refusals)

    # The current holder is untouched by all of that and finishes normally.
    assert await new.report_progress(0.7, stage="encoding")
    follow_up = await new.enqueue_next("work.next", {})
    assert await queue.heartbeat([current.lease], LEASE) == {current.id}
    assert await queue.succeed(current.lease, {"by": "current"})
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.id == enq.task_id))).mappings().one()
        kinds = (await conn.execute(select(tasks.c.kind).where(tasks.c.job_id == enq.job_id))).scalars().all()
    assert row["status"] == states.SUCCEEDED and row["result"] == {"by": "current"}
    assert sorted(kinds) == ["work", "work.next"] and follow_up.job_id == enq.job_id


async def test_lost_run_is_not_a_failed_attempt_and_history_shows_it(engine):
    """The worker of the last allowed attempt finished the (idempotent) work and died before
    recording it: the task is run again, finds the work done and succeeds, instead of going dead."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (task_id BIGINT PRIMARY KEY)"))
    queue = TaskQueue(engine)
    enq = await queue.enqueue("once", max_attempts=1, max_lost_attempts=3)
    [first] = await queue.claim("doomed-worker", ["once"], 1, SHORT)
    async with context(queue, first).fenced("record the effect") as conn:
        await conn.execute(text("INSERT INTO effects VALUES (:t)"), {"t": first.id})
    # ... and the worker dies here, before it can record success.
    await expire_and_reap(queue, engine)
    [second] = await queue.claim("rescuer", ["once"], 1, LEASE)
    assert (second.attempts, second.lost_attempts) == (1, 1)
    async with engine.connect() as conn:
        done = (await conn.execute(text("SELECT count(*) FROM effects WHERE task_id = :t"), {"t": second.id})).scalar()
    assert done == 1  # the idempotent handler finds its work and just reports success
    assert await queue.succeed(second.lease, {"found": "already done"})
    job = await get_job(engine, enq.job_id)
    assert job["status"] == states.JOB_COMPLETED
    (task,) = job["tasks"]
    assert task["lost_attempts"] == 1 and task["attempts"] == 1
    assert [(h["outcome"], h["fence"], h["worker"]) for h in task["history"]] == [
        ("lost", first.fence, "doomed-worker")
    ]


async def test_a_task_that_keeps_losing_its_worker_ends_dead_at_its_own_bound(engine):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("crasher", max_attempts=10, max_lost_attempts=2)
    for round_ in range(2):
        [run] = await queue.claim(f"w{round_}", ["crasher"], 1, SHORT)
        await expire_and_reap(queue, engine)
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks).where(tasks.c.id == enq.task_id))).mappings().one()
        outcomes = (
            (await conn.execute(select(task_attempts.c.outcome).where(task_attempts.c.task_id == enq.task_id)))
            .scalars()
            .all()
        )
    assert row["status"] == states.DEAD and row["lost_attempts"] == 2 and row["attempts"] == 0
    assert "worker lost 2 times" in row["last_error"] and outcomes == ["lost", "lost"]
    assert run.fence == 2


async def test_failed_attempts_are_recorded_in_the_history(engine):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("flaky", max_attempts=2)
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 1", timedelta(0)) == states.QUEUED
    [run] = await queue.claim("w", ["flaky"], 1, LEASE)
    assert await queue.retry_later(run.lease, "boom 2", timedelta(0)) == states.DEAD
    job = await get_job(engine, enq.job_id)
    (task,) = job["tasks"]
    assert [(h["attempt"], h["outcome"], h["error"]) for h in task["history"]] == [
        (1, "retried", "boom 1"),
        (2, "dead", "boom 2"),
    ]
    assert task["last_error"] == "boom 2 (gave up after 2 attempts)" and job["status"] == states.JOB_DEAD
