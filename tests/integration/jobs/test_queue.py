"""Queue semantics on both backends: idempotency, priority order, retries, dead tasks,
cancellation, timeouts, rate limits and lease expiry."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from sqlalchemy import select

from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.errors import PermanentError, RateLimitedError
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.worker import Worker, WorkerOptions

LEASE = timedelta(seconds=30)


async def task_row(engine, task_id):
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().one()


async def job_row(engine, job_id):
    async with engine.connect() as conn:
        return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().one()


async def run_worker_until(engine, registry, predicate, *, timeout=20.0, **options):
    """Run a real worker until `predicate()` holds, then stop it gracefully."""
    worker = Worker(engine, registry, WorkerOptions(poll_interval=0.05, cancel_poll_interval=0.05, **options))
    runner = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    finally:
        worker.request_stop()
        await runner
    return worker


async def test_idempotency_key_returns_the_first_task(engine):
    queue = TaskQueue(engine)
    first = await queue.enqueue("noop", {"n": 1}, idempotency_key="vod:123")
    second = await queue.enqueue("noop", {"n": 2}, idempotency_key="vod:123")
    third = await queue.enqueue("noop", {"n": 3}, idempotency_key="vod:456")
    assert first.created and not second.created and third.created
    assert second.task_id == first.task_id and second.job_id == first.job_id
    assert third.task_id != first.task_id
    row = await task_row(engine, first.task_id)
    assert row["payload"] == {"n": 1}


async def test_concurrent_enqueue_with_same_key_creates_one_task(engine):
    queue = TaskQueue(engine)
    results = await asyncio.gather(*[queue.enqueue("noop", idempotency_key="same") for _ in range(8)])
    assert len({r.task_id for r in results}) == 1
    assert sum(r.created for r in results) == 1


async def test_claim_takes_highest_priority_first_and_never_twice(engine):
    queue = TaskQueue(engine)
    low = await queue.enqueue("noop", priority=0)
    high = await queue.enqueue("noop", priority=10)
    mid = await queue.enqueue("noop", priority=5)
    first = await queue.claim("w1", ["noop"], 1, LEASE)
    second = await queue.claim("w2", ["noop"], 5, LEASE)
    assert [t.id for t in first] == [high.task_id]
    assert {t.id for t in second} == {mid.task_id, low.task_id}
    assert await queue.claim("w3", ["noop"], 5, LEASE) == []


async def test_claim_respects_run_after_and_capabilities(engine):
    queue = TaskQueue(engine)
    later = await queue.enqueue("noop", run_after=utcnow() + timedelta(hours=1))
    gpu = await queue.enqueue("noop", required_capability="h264_nvenc")
    cpu_claim = await queue.claim("cpu-worker", ["noop"], 5, LEASE, capabilities=["libx264"])
    assert cpu_claim == []
    gpu_claim = await queue.claim("gpu-worker", ["noop"], 5, LEASE, capabilities=["h264_nvenc"])
    assert [t.id for t in gpu_claim] == [gpu.task_id]
    assert (await task_row(engine, later.task_id))["status"] == states.QUEUED


async def test_transient_failures_retry_with_backoff_then_die(engine):
    calls = []
    registry = TaskRegistry()

    async def flaky(ctx):
        calls.append(utcnow())
        raise ConnectionError("network down")

    registry.register(TaskKind("flaky", flaky, max_attempts=3, backoff_base=0.2, backoff_cap=5))
    queue = TaskQueue(engine)
    enq = await queue.enqueue("flaky", max_attempts=3)

    async def dead():
        return (await task_row(engine, enq.task_id))["status"] == states.DEAD

    await run_worker_until(engine, registry, dead)
    row = await task_row(engine, enq.task_id)
    assert len(calls) == 3 and row["attempts"] == 3
    assert "network down" in row["last_error"] and "gave up after 3 attempts" in row["last_error"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(calls)]
    # equal jitter: delay after attempt n is in [base*2^(n-1)/2, base*2^(n-1)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2
    assert (await job_row(engine, enq.job_id))["status"] == states.JOB_DEAD


async def test_permanent_error_fails_at_once_with_reason(engine):
    registry = TaskRegistry()
    calls = []

    async def broken(ctx):
        calls.append(1)
        raise PermanentError("input is not a video: moov atom not found")

    registry.register(TaskKind("broken", broken))
    enq = await TaskQueue(engine).enqueue("broken")

    async def failed():
        return (await task_row(engine, enq.task_id))["status"] == states.FAILED

    await run_worker_until(engine, registry, failed)
    job = await job_row(engine, enq.job_id)
    assert calls == [1]
    assert job["status"] == states.JOB_FAILED and "moov atom" in job["error"]


async def test_rate_limited_task_waits_without_spending_attempts(engine):
    registry = TaskRegistry()
    calls = []

    async def limited(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise RateLimitedError("quotaExceeded", utcnow() + timedelta(seconds=0.5))
        return {"ok": True}

    registry.register(TaskKind("limited", limited, max_attempts=1))
    enq = await TaskQueue(engine).enqueue("limited", max_attempts=1)

    async def done():
        return (await task_row(engine, enq.task_id))["status"] == states.SUCCEEDED

    await run_worker_until(engine, registry, done)
    row = await task_row(engine, enq.task_id)
    assert calls == [1, 1]  # retried although max_attempts=1: waiting is not failing
    assert row["attempts"] == 1 and row["result"] == {"ok": True}


async def test_timeout_counts_as_transient_failure(engine):
    registry = TaskRegistry()

    async def slow(ctx):
        await asyncio.sleep(30)

    registry.register(TaskKind("slow", slow, timeout=0.3, max_attempts=1))
    enq = await TaskQueue(engine).enqueue("slow", max_attempts=1)

    async def dead():
        return (await task_row(engine, enq.task_id))["status"] == states.DEAD

    await run_worker_until(engine, registry, dead)
    assert "timed out after 0.3s" in (await task_row(engine, enq.task_id))["last_error"]


async def test_cancel_reaches_running_handler_and_is_not_retried(engine):
    registry = TaskRegistry()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def long_running(ctx):
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    registry.register(TaskKind("long", long_running))
    queue = TaskQueue(engine)
    enq = await queue.enqueue("long")
    from reelhouse.core.jobs.control import cancel_job

    async def cancelled():
        if started.is_set():
            await cancel_job(engine, enq.job_id)
        return (await task_row(engine, enq.task_id))["status"] == states.CANCELLED

    await run_worker_until(engine, registry, cancelled)
    assert stopped.is_set()
    row = await task_row(engine, enq.task_id)
    assert row["attempts"] == 1 and row["finished_at"] is not None
    assert (await job_row(engine, enq.job_id))["status"] == states.JOB_CANCELLED
    assert await queue.claim("w", ["long"], 1, LEASE) == []


async def test_expired_lease_is_requeued_and_lost_worker_cannot_finish(engine):
    queue = TaskQueue(engine)
    enq = await queue.enqueue("noop")
    [claimed] = await queue.claim("dead-worker", ["noop"], 1, timedelta(seconds=0.1))
    await asyncio.sleep(0.3)
    assert await queue.reap_expired_leases() == 1
    [again] = await queue.claim("live-worker", ["noop"], 1, LEASE)
    # The lost run is not a failed attempt: it is counted apart.
    assert again.id == claimed.id and again.attempts == 1 and again.lost_attempts == 1
    assert again.fence == claimed.fence + 1
    assert not await queue.succeed(claimed.lease, {"from": "dead"})
    assert await queue.succeed(again.lease, {"from": "live"})
    assert (await task_row(engine, enq.task_id))["result"] == {"from": "live"}


async def test_global_concurrency_limit_is_enforced_at_claim(engine):
    queue = TaskQueue(engine)
    for _ in range(5):
        await queue.enqueue("download")
    first = await queue.claim("w1", ["download"], 5, LEASE, global_limit=2)
    second = await queue.claim("w2", ["download"], 5, LEASE, global_limit=2)
    assert len(first) == 2 and second == []


async def test_retry_dead_task_requeues_it(engine):
    from reelhouse.core.jobs.control import retry_task

    queue = TaskQueue(engine)
    enq = await queue.enqueue("noop", max_attempts=1)
    [claimed] = await queue.claim("w", ["noop"], 1, LEASE)
    await queue.retry_later(claimed.lease, "boom", timedelta(0))
    assert (await task_row(engine, enq.task_id))["status"] == states.DEAD
    assert await retry_task(engine, enq.task_id)
    row = await task_row(engine, enq.task_id)
    assert row["status"] == states.QUEUED and row["attempts"] == 0
    assert (await job_row(engine, enq.job_id))["status"] == states.JOB_QUEUED
