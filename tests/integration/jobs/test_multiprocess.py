"""The engine's guarantees under real concurrency: several OS processes, SIGKILL, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")


async def create_execution_log(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE execution_log (task_id BIGINT NOT NULL UNIQUE, worker VARCHAR(64) NOT NULL)")
        )


def start_worker(
    url: str,
    worker_id: str,
    lease: float = 30,
    concurrency: int = 4,
    clock_offset: float = 0.0,
    kinds: list[str] | None = None,
) -> subprocess.Popen:
    extra = [",".join(kinds)] if kinds else []
    return subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), url, worker_id, str(lease), str(concurrency), str(clock_offset), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def count(engine, sql: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting: {message}")


def stop_all(procs: list[subprocess.Popen]) -> list[str]:
    errors = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if "Traceback" in (err or ""):
            errors.append(err)
    return errors


@pytest.mark.slow
async def test_eight_workers_drain_5000_tasks_exactly_once(db_url):
    engine = create_engine(db_url)
    await create_execution_log(engine)
    queue = TaskQueue(engine)
    async with engine.begin() as conn:
        # 50 jobs of 100 tasks: tasks of one job finish concurrently on different workers,
        # which is what the job-status aggregation must survive.
        job_ids = [await queue.create_job(conn, "bulk", {}) for _ in range(50)]
        for i in range(5000):
            await queue.add_task(conn, job_ids[i % 50], "exec.record", {"i": i})
    procs = [start_worker(db_url, f"w{i}") for i in range(8)]
    try:
        await wait_until(lambda: _all_done(engine, 5000), timeout=240, message="5000 tasks succeeded")
    except AssertionError:
        # Show what the workers said: a stall here is an engine bug worth reading about.
        errors = stop_all(procs)
        done = await count(engine, "SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'")
        raise AssertionError(f"{done} of 5000 succeeded; worker errors: {[e[-1500:] for e in errors]}") from None
    errors = stop_all(procs)
    assert errors == [], errors[0][-2000:] if errors else ""
    assert await count(engine, "SELECT COUNT(*) FROM execution_log") == 5000
    assert await count(engine, "SELECT COUNT(DISTINCT task_id) FROM execution_log") == 5000
    # The load really was shared: more than one process did work.
    assert await count(engine, "SELECT COUNT(DISTINCT worker) FROM execution_log") > 1
    assert await count(engine, "SELECT MAX(attempts) FROM tasks") == 1
    async with engine.connect() as conn:
        statuses = (await conn.execute(text("SELECT DISTINCT status FROM jobs"))).scalars().all()
    assert statuses == [states.JOB_COMPLETED]
    await engine.dispose()


async def _all_done(engine, expected: int) -> bool:
    return await count(engine, "SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'") >= expected


@pytest.mark.slow
async def test_sigkilled_worker_task_is_rerun_once_after_lease_expiry(db_url):
    engine = create_engine(db_url)
    await create_execution_log(engine)
    queue = TaskQueue(engine)
    enq = await queue.enqueue("exec.slow", {"sleep": 3})
    victim = start_worker(db_url, "victim", lease=1.5, concurrency=1)

    async def claimed_by_victim() -> bool:
        async with engine.connect() as conn:
            owner = (await conn.execute(select(tasks.c.lease_owner).where(tasks.c.id == enq.task_id))).scalar_one()
        return owner == "victim"

    await wait_until(claimed_by_victim, 30, "victim claims the task")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert await count(engine, "SELECT COUNT(*) FROM execution_log") == 0
    rescuer = start_worker(db_url, "rescuer", lease=1.5, concurrency=1)
    try:
        await wait_until(lambda: _all_done(engine, 1), 60, "task completes after lease expiry")
    finally:
        errors = stop_all([rescuer])
    assert errors == []
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT task_id, worker FROM execution_log"))).all()
        attempts, lost = (
            await conn.execute(select(tasks.c.attempts, tasks.c.lost_attempts).where(tasks.c.id == enq.task_id))
        ).one()
    assert rows == [(enq.task_id, "rescuer")]
    assert (attempts, lost) == (1, 1)  # the killed run counts as lost, not as a failed attempt
    await engine.dispose()


@pytest.mark.slow
async def test_sigterm_releases_running_task_for_another_worker(db_url):
    engine = create_engine(db_url)
    await create_execution_log(engine)
    enq = await TaskQueue(engine).enqueue("exec.slow", {"sleep": 30})
    first = start_worker(db_url, "first", lease=30, concurrency=1)

    async def running() -> bool:
        async with engine.connect() as conn:
            return (
                await conn.execute(select(tasks.c.status).where(tasks.c.id == enq.task_id))
            ).scalar_one() == states.RUNNING

    await wait_until(running, 30, "task running")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0  # graceful exit after the 5 s grace period
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(tasks.c.status, tasks.c.attempts, tasks.c.lease_owner).where(tasks.c.id == enq.task_id)
            )
        ).one()
    # Released, not left to expire: queued at once, the interrupted run not counted.
    assert (row.status, row.attempts, row.lease_owner) == (states.QUEUED, 0, None)
    await engine.dispose()


@pytest.mark.slow
async def test_workers_whose_clocks_are_ten_minutes_off_keep_their_leases(db_url):
    """One worker's clock is ten minutes ahead, the other's ten minutes behind; tasks outlast
    the lease several times over. With leases on a worker's clock the one behind would stamp
    leases that are already over and the one ahead would reap them: double runs. On the
    database's clock every task runs once."""
    engine = create_engine(db_url)
    await create_execution_log(engine)
    queue = TaskQueue(engine)
    for _ in range(6):
        await queue.enqueue("exec.slow", {"sleep": 5})
    procs = [
        start_worker(db_url, "ahead", lease=2, concurrency=3, clock_offset=600),
        start_worker(db_url, "behind", lease=2, concurrency=3, clock_offset=-600),
    ]
    try:
        await wait_until(lambda: _all_done(engine, 6), timeout=120, message="6 slow tasks succeeded")
    finally:
        errors = stop_all(procs)
    assert errors == [], errors[0][-2000:] if errors else ""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(tasks.c.fence, tasks.c.attempts, tasks.c.lost_attempts))).all()
        workers = (await conn.execute(text("SELECT DISTINCT worker FROM execution_log"))).scalars().all()
    assert rows == [(1, 1, 0)] * 6  # claimed once each, never reclaimed
    assert await count(engine, "SELECT COUNT(*) FROM execution_log") == 6
    assert sorted(workers) == ["ahead", "behind"]  # both held leases for the whole run
    await engine.dispose()
