"""The kernel applies worker events as compare-and-sets on the run's fencing token: a late or
duplicate event never moves a finished task (no NATS needed: `KernelBridge.apply` directly)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import ClaimedTask, TaskQueue
from reelhouse.core.jobs.remote.kernel import KernelBridge
from reelhouse.core.jobs.remote.settings import NatsSettings
from tests.integration.nats.conftest import kernel_registry


async def row(engine, task_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().one()


def offline_kernel(engine) -> KernelBridge:
    """A kernel that is never connected: only its event application is used."""
    return KernelBridge(
        engine,
        kernel_registry(),
        url="nats://unused",
        settings=NatsSettings(),
        lease=timedelta(seconds=30),
        stale_after=timedelta(seconds=30),
    )


def event(kind: str, task: ClaimedTask, **fields):
    return {
        "type": kind,
        "task_id": task.id,
        "fence": task.fence,
        "owner": task.owner,
        "attempt": task.attempts,
        **fields,
    }


async def test_late_and_duplicate_events_never_move_a_finished_task(engine):
    queue = TaskQueue(engine)
    kernel = offline_kernel(engine)
    enqueued = await queue.enqueue("nx.sleep", {"sleep": 0})
    first = await queue.claim_task(enqueued.task_id, "w-1", timedelta(seconds=30), ["cpu"])
    assert isinstance(first, ClaimedTask) and first.fence == 1
    # A second claim while the first run holds the task is refused: never two runs at once.
    assert await queue.claim_task(enqueued.task_id, "w-2", timedelta(seconds=30), ["cpu"]) == "running"

    await kernel.apply(event("progress", first, fraction=0.5, detail={"stage": "encoding"}))
    assert (await row(engine, first.id))["progress"] == 0.5
    await kernel.apply(event("completed", first, result={"worker": "w-1"}))
    done = await row(engine, first.id)
    assert done["status"] == states.SUCCEEDED and done["result"] == {"worker": "w-1"}

    # Redelivered outcome, a late failure and late progress of the same run: nothing changes.
    await kernel.apply(event("completed", first, result={"worker": "duplicate"}))
    await kernel.apply(event("failed", first, reason="late", permanent=True))
    await kernel.apply(event("failed", first, reason="late transient", delay=0))
    await kernel.apply(event("progress", first, fraction=0.1))
    await kernel.apply(event("cancelled", first))
    after = await row(engine, first.id)
    assert after["status"] == states.SUCCEEDED and after["result"] == {"worker": "w-1"}
    assert after["progress"] == 1.0 and after["fence"] == 1
    assert await queue.claim_task(first.id, "w-2", timedelta(seconds=30), ["cpu"]) == "finished"


async def test_an_old_runs_events_are_refused_after_a_new_claim(engine):
    queue = TaskQueue(engine)
    kernel = offline_kernel(engine)
    enqueued = await queue.enqueue("nx.sleep", {"sleep": 0}, required_capability="fakegpu")
    assert await queue.claim_task(enqueued.task_id, "w-cpu", timedelta(seconds=30), ["cpu"]) == "capability"
    old = await queue.claim_task(enqueued.task_id, "w-1", timedelta(seconds=30), ["fakegpu"])
    assert isinstance(old, ClaimedTask)
    await queue.release(old.lease)  # e.g. the worker shut down; the task is queued again
    new = await queue.claim_task(enqueued.task_id, "w-2", timedelta(seconds=30), ["fakegpu"])
    assert isinstance(new, ClaimedTask) and new.fence == old.fence + 1
    await kernel.apply(event("completed", old, result={"worker": "w-1"}))  # the old run's late result
    assert (await row(engine, new.id))["status"] == states.RUNNING
    await kernel.apply(event("completed", new, result={"worker": "w-2"}))
    final = await row(engine, new.id)
    assert final["status"] == states.SUCCEEDED and final["result"] == {"worker": "w-2"}


async def test_a_batch_applies_each_tasks_events_in_order_and_reports_each(engine):
    """The events consumer hands the kernel up to 64 events at once: different tasks' are
    applied side by side, one task's in the order they came; the ones that fail (not an event)
    are reported so only they are redelivered."""
    queue = TaskQueue(engine)
    kernel = offline_kernel(engine)
    runs = []
    for _ in range(12):
        enqueued = await queue.enqueue("nx.sleep", {"sleep": 0})
        claimed = await queue.claim_task(enqueued.task_id, "w-1", timedelta(seconds=30), ["cpu"])
        assert isinstance(claimed, ClaimedTask)
        runs.append(claimed)
    batch: list = []
    for number, run in enumerate(runs):
        batch.append(event("progress", run, fraction=0.5, detail={"stage": "encoding"}))
        batch.append(event("completed", run, result={"n": number}))
        # Redelivered outcomes of the same run after the first: the first one stands.
        batch.append(event("completed", run, result={"n": "duplicate"}))
        batch.append(event("failed", run, reason="late", permanent=True))
    batch.insert(5, None)  # a message that was not JSON
    batch.insert(9, {"type": "completed"})  # no task id
    applied = await kernel.apply_many(batch)
    assert [i for i, ok in enumerate(applied) if not ok] == [5, 9]
    for number, run in enumerate(runs):
        done = await row(engine, run.id)
        assert done["status"] == states.SUCCEEDED and done["result"] == {"n": number}, (number, dict(done))
        assert done["progress"] == 1.0 and done["fence"] == 1
    assert await kernel.apply_many([]) == []
