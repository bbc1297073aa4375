"""Retention on both backends: what is past its window goes, in batches, and nothing queued,
running or recent is touched; system jobs are hidden from listings unless asked for."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from reelhouse.core.db.models import api_tokens, jobs, periodic_runs, task_attempts, tasks, users
from reelhouse.core.jobs import states
from reelhouse.core.jobs.control import list_jobs
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.retention import prune
from reelhouse.core.jobs.scheduler import PeriodicTask, Scheduler
from reelhouse.core.jobs.settings import RetentionSettings

LEASE = timedelta(seconds=60)
CONF = RetentionSettings(
    job_retention=timedelta(days=14),
    job_retention_failed=timedelta(days=90),
    job_retention_idle=timedelta(hours=1),
    prune_batch=500,
)


async def age(engine, job_ids: list[int], days: float) -> None:
    """Move jobs' (and their tasks') finish time back by `days` on the database's clock."""
    then = await database_time(engine) - timedelta(days=days)
    async with engine.begin() as conn:
        await conn.execute(jobs.update().where(jobs.c.id.in_(job_ids)).values(finished_at=then, created_at=then))
        await conn.execute(tasks.update().where(tasks.c.job_id.in_(job_ids)).values(finished_at=then))


async def count(engine, table, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def finished_job(queue: TaskQueue, status: str, *, system: bool = False, idle: bool = False) -> int:
    enq = await queue.enqueue("work", system=system, max_attempts=1)
    [run] = await queue.claim("w", ["work"], 1, LEASE)
    assert run.id == enq.task_id
    if idle:
        assert await queue.mark_idle(run.lease)
    if status == states.JOB_COMPLETED:
        assert await queue.succeed(run.lease, None)
    elif status == states.JOB_FAILED:
        assert await queue.fail_permanently(run.lease, "broken")
    elif status == states.JOB_DEAD:
        assert await queue.retry_later(run.lease, "flaky", timedelta(0)) == states.DEAD
    return enq.job_id


async def test_prune_keeps_what_is_open_recent_or_within_its_window(engine):
    queue = TaskQueue(engine)
    old_done = await finished_job(queue, states.JOB_COMPLETED)
    old_failed = await finished_job(queue, states.JOB_FAILED)
    older_dead = await finished_job(queue, states.JOB_DEAD)
    recent_done = await finished_job(queue, states.JOB_COMPLETED)
    idle_system = await finished_job(queue, states.JOB_COMPLETED, system=True, idle=True)
    busy_system = await finished_job(queue, states.JOB_COMPLETED, system=True)
    await age(engine, [old_done, old_failed, busy_system], days=20)
    await age(engine, [older_dead], days=100)
    await age(engine, [idle_system], days=0.1)  # 2.4 h: past the idle window only
    queued = await queue.enqueue("later")
    running = await queue.enqueue("busy")
    [_held] = await queue.claim("w", ["busy"], 1, LEASE)
    # A job that finished long ago but got a follow-up task that is still queued stays.
    reopened = await finished_job(queue, states.JOB_COMPLETED)
    await age(engine, [reopened], days=30)
    await queue.enqueue("late-follow-up", job_id=reopened)

    report = await prune(engine, CONF)
    async with engine.connect() as conn:
        left = set((await conn.execute(select(jobs.c.id))).scalars().all())
    gone = {old_done, older_dead, idle_system, busy_system}
    assert left & gone == set()
    assert {old_failed, recent_done, queued.job_id, running.job_id, reopened} <= left
    assert report.jobs == 4 and report.tasks == 4
    assert await count(engine, task_attempts, task_attempts.c.task_id.notin_(select(tasks.c.id))) == 0


@pytest.mark.slow
async def test_pruning_100k_finished_tasks_touches_nothing_open_and_claims_keep_flowing(engine):
    queue = TaskQueue(engine)
    then = await database_time(engine) - timedelta(days=30)
    job_rows = [
        {
            "kind": "old",
            "status": "completed",
            "payload": {},
            "created_at": then,
            "updated_at": then,
            "finished_at": then,
        }
        for _ in range(20_000)
    ]
    async with engine.begin() as conn:
        await conn.execute(jobs.insert(), job_rows)
        ids = (await conn.execute(select(jobs.c.id).where(jobs.c.kind == "old"))).scalars().all()
        task_rows = [
            {
                "job_id": job_id,
                "kind": "old",
                "status": "succeeded",
                "payload": {},
                "run_after": then,
                "created_at": then,
                "updated_at": then,
                "finished_at": then,
            }
            for job_id in ids
            for _ in range(5)
        ]
        for start in range(0, len(task_rows), 10_000):
            await conn.execute(tasks.insert(), task_rows[start : start + 10_000])
    assert await count(engine, tasks, tasks.c.kind == "old") == 100_000
    recent = await finished_job(queue, states.JOB_COMPLETED)
    running = await queue.enqueue("held")
    [held] = await queue.claim("holder", ["held"], 1, LEASE)
    for _ in range(300):
        await queue.enqueue("fresh")

    claimed: list[int] = []

    async def claim_during_prune() -> None:
        while len(claimed) < 300:
            for run in await queue.claim("claimer", ["fresh"], 5, LEASE):
                claimed.append(run.id)
                assert await queue.succeed(run.lease, None)
            await asyncio.sleep(0)

    pruning = asyncio.create_task(prune(engine, CONF))
    await claim_during_prune()
    report = await pruning
    assert report.tasks == 100_000 and report.jobs == 20_000 and report.batches >= 40
    assert len(set(claimed)) == 300  # claims went on while the prune ran
    assert await count(engine, tasks, tasks.c.kind == "old") == 0
    assert await count(engine, jobs, jobs.c.id == recent) == 1
    async with engine.connect() as conn:
        row = (await conn.execute(select(tasks.c.status, tasks.c.fence).where(tasks.c.id == running.task_id))).one()
    assert (row.status, row.fence) == (states.RUNNING, held.fence)


async def test_periodic_runs_keep_the_newest_row_per_name(engine):
    entry = PeriodicTask("weekly", "weekly", every=timedelta(days=7))
    every_minute = PeriodicTask("often", "often", every=timedelta(minutes=1))
    scheduler = Scheduler(engine, [entry, every_minute])
    now = await database_time(engine)
    for minutes in (300, 200, 100, 0):
        await scheduler.tick(now - timedelta(minutes=minutes))
    async with engine.begin() as conn:  # their rows were written now: date them as their periods
        await conn.execute(
            text("UPDATE periodic_runs SET created_at = period_start"),
        )

    async def periods(name: str) -> list:
        async with engine.connect() as conn:
            query = select(periodic_runs.c.period_start).where(periodic_runs.c.name == name)
            return sorted((await conn.execute(query)).scalars().all())

    often_before, weekly_before = await periods("often"), await periods("weekly")
    report = await prune(engine, CONF)
    often_after, weekly_after = await periods("often"), await periods("weekly")
    # "often" keeps its newest period only; "weekly" keeps its newest however old it is (the
    # row that stops the current week from firing twice).
    assert len(often_before) == 4 and often_after == often_before[-1:]
    assert weekly_after == weekly_before[-1:]
    assert report.periodic_runs == 3 + len(weekly_before) - 1


async def test_expired_tokens_go_and_live_ones_stay(engine):
    now = await database_time(engine)
    async with engine.begin() as conn:
        user = (
            await conn.execute(
                users.insert()
                .values(username="u", password_hash="x", role="viewer", created_at=now)
                .returning(users.c.id)
            )
        ).scalar_one()
        for name, expires in (
            ("long-gone", now - timedelta(days=30)),
            ("fresh", now + timedelta(days=1)),
            ("none", None),
        ):
            await conn.execute(
                api_tokens.insert().values(
                    user_id=user,
                    name=name,
                    token_hash=name.ljust(64, "0"),
                    prefix="rh_",
                    created_at=now,
                    expires_at=expires,
                )
            )
    report = await prune(engine, CONF)
    async with engine.connect() as conn:
        names = sorted((await conn.execute(select(api_tokens.c.name))).scalars().all())
    assert names == ["fresh", "none"] and report.api_tokens == 1


async def test_system_jobs_are_hidden_from_listings_unless_asked(engine):
    scheduler = Scheduler(engine, [PeriodicTask("sweep", "sweep", every=timedelta(minutes=5))])
    [system_task] = await scheduler.tick()
    user_job = (await TaskQueue(engine).enqueue("encode")).job_id
    shown = [job["id"] for job in await list_jobs(engine)]
    everything = await list_jobs(engine, system=True)
    assert shown == [user_job]
    assert len(everything) == 2 and {j["system"] for j in everything} == {True, False}
    assert system_task in await _task_ids(engine)


async def _task_ids(engine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(tasks.c.id))).scalars().all())
