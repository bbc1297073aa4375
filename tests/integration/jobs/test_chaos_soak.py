"""Chaos soak, on both backends: 8 worker processes drain 3,000 tasks while a driver SIGKILLs
a random worker 20 times (replacing it) and SIGSTOPs a worker past its lease, resuming it after
another run finished its task. Every task's side effect is recorded exactly once, no task is
lost, and the paused run writes nothing once its lease is gone.

The paused worker is a ninth process that holds only the task it is paused on, and it is
stopped at a moment it has no transaction open: a process stopped inside a transaction keeps
its locks (on SQLite the one write lock, which stalls every writer until it resumes; on
PostgreSQL its rows), which no engine can take from it. What this test checks is what happens
to the *lease*: it ends, the task moves on, and the resumed run is fenced off.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest
from sqlalchemy import select, text

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.models import task_attempts, tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from tests.integration.jobs.test_multiprocess import count, start_worker, stop_all

TASKS = 3000
WORKERS = 8
KILLS = 20
LEASE = 2.0  # seconds: how long a killed worker's tasks wait before another worker reclaims them
DRAIN_TIMEOUT = 150.0


async def create_effects_table(engine) -> None:
    async with engine.begin() as conn:
        # No unique constraint on purpose: a second run writing while another holds the task
        # would show up as a second row.
        await conn.execute(
            text("CREATE TABLE soak_effects (task_id BIGINT NOT NULL, fence BIGINT NOT NULL, worker VARCHAR(64))")
        )


async def status_of(engine, task_id: int):
    async with engine.connect() as conn:
        return (
            await conn.execute(select(tasks.c.status, tasks.c.fence, tasks.c.lease_owner).where(tasks.c.id == task_id))
        ).one()


async def open_transactions(engine) -> int:
    """Transactions left open by clients (a stopped process's): SQLite's write lock, or
    PostgreSQL sessions idle in a transaction."""
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(engine.url.database, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return 0
        except sqlite3.OperationalError:
            return 1
        finally:
            probe.close()
    return await count(
        engine,
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )


async def pause_holding(engine, proc: subprocess.Popen, task_id: int) -> int:
    """SIGSTOP `proc` once it runs `task_id`, at a moment it holds no transaction; the fence."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = await status_of(engine, task_id)
        if row.status == states.RUNNING:
            os.kill(proc.pid, signal.SIGSTOP)
            await asyncio.sleep(0.2)
            if await open_transactions(engine) == 0:
                return row.fence
            os.kill(proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.05)
    raise AssertionError("the pause worker never ran its task")


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_chaos_soak_every_side_effect_exactly_once(db_url):
    engine = create_engine(db_url)
    await create_effects_table(engine)
    queue = TaskQueue(engine)
    rng = random.Random(2026)
    async with engine.begin() as conn:
        job_ids = [await queue.create_job(conn, "soak", {}) for _ in range(100)]
        for i in range(TASKS):
            payload = {"before": rng.uniform(0, 0.01), "after": rng.uniform(0, 0.01)}
            await queue.add_task(conn, job_ids[i % 100], "soak.effect", payload, max_lost_attempts=50)
    # The one to pause: slow before its write, so the pause lands before the write happens.
    paused_task = (await queue.enqueue("soak.pause", {"before": 6.0}, max_lost_attempts=50)).task_id
    pauser = start_worker(db_url, "pauser", lease=LEASE, concurrency=1, kinds=["soak.pause"])
    resumed = False
    names = iter(f"w{i}" for i in range(1000))
    procs: dict[str, subprocess.Popen] = {}
    retired: list[subprocess.Popen] = []

    def spawn() -> None:
        name = next(names)
        procs[name] = start_worker(db_url, name, lease=LEASE, concurrency=4)

    kills = 0
    try:
        stale_fence = await pause_holding(engine, pauser, paused_task)
        await asyncio.sleep(0.5)  # anything already on the wire has landed by now
        stale_rows_at_pause = await count(
            engine, f"SELECT COUNT(*) FROM soak_effects WHERE task_id = {paused_task} AND fence = {stale_fence}"
        )
        for _ in range(WORKERS):
            spawn()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            done = await count(engine, "SELECT COUNT(*) FROM tasks WHERE status = 'succeeded'")
            if done >= TASKS + 1:
                break
            assert time.monotonic() < deadline, f"only {done} of {TASKS + 1} tasks done"
            if not resumed and (await status_of(engine, paused_task)).status == states.SUCCEEDED:
                os.kill(pauser.pid, signal.SIGCONT)  # another run took over and finished it
                resumed = True
            if kills < KILLS and done >= (kills + 1) * (TASKS // (KILLS + 5)):
                victim = rng.choice(list(procs))
                procs[victim].kill()
                procs[victim].wait()
                retired.append(procs.pop(victim))
                kills += 1
                spawn()
            await asyncio.sleep(0.05)
        if not resumed:  # its takeover was among the last tasks to finish: it is done now
            os.kill(pauser.pid, signal.SIGCONT)
            resumed = True
        await asyncio.sleep(LEASE)  # the resumed run notices, or tries its write and is refused
    finally:
        if not resumed:
            os.kill(pauser.pid, signal.SIGCONT)
        errors = stop_all([*procs.values(), pauser])
        for proc in retired:
            proc.communicate()
    assert kills == KILLS and resumed
    assert errors == [], errors[0][-2000:] if errors else ""

    async with engine.connect() as conn:
        per_task = dict((await conn.execute(text("SELECT task_id, COUNT(*) FROM soak_effects GROUP BY task_id"))).all())
        statuses = dict((await conn.execute(text("SELECT status, COUNT(*) FROM tasks GROUP BY status"))).all())
        lost = (
            await conn.execute(
                select(task_attempts.c.task_id, task_attempts.c.fence).where(task_attempts.c.outcome == "lost")
            )
        ).all()
        all_ids = set((await conn.execute(select(tasks.c.id))).scalars().all())
    # No task lost, none dead: every one succeeded.
    assert statuses == {states.SUCCEEDED: TASKS + 1}
    # Every task's side effect exactly once.
    assert set(per_task) == all_ids and set(per_task.values()) == {1}
    # The paused run wrote nothing after it was paused (its lease was gone when it resumed).
    stale_rows = await count(
        engine, f"SELECT COUNT(*) FROM soak_effects WHERE task_id = {paused_task} AND fence = {stale_fence}"
    )
    assert stale_rows_at_pause == 0 and stale_rows == 0
    assert (paused_task, stale_fence) in {(t, f) for t, f in lost}  # the history shows the lost run
    await engine.dispose()
