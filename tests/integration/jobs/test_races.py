"""Races the engine must settle on both backends: cancel against claim, the last free slot of
a global concurrency limit, and a half-open circuit breaker's single trial."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from sqlalchemy import select

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from reelhouse.core.jobs.control import CancelOutcome, request_cancel
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.queue import TaskQueue

LEASE = timedelta(seconds=60)


async def test_a_thousand_cancels_racing_claims_report_what_really_happened(engine):
    queue = TaskQueue(engine)
    async with engine.begin() as conn:
        job_ids = [await queue.create_job(conn, "race", {}) for _ in range(100)]
        ids = [await queue.add_task(conn, job_ids[i % 100], "race", {}) for i in range(1000)]
    claimed: dict[int, str] = {}  # task id -> what its claimer did with it ("kept" or "finished")
    finished_at_claim: set[int] = set()
    stop = asyncio.Event()
    rng = random.Random(12)

    async def claimer(name: str) -> None:
        while not stop.is_set():
            batch = await queue.claim(name, ["race"], 4, LEASE)
            for task in batch:
                assert task.id not in claimed, "claimed twice"
                if rng.random() < 0.5:
                    assert await queue.succeed(task.lease, None)
                    claimed[task.id] = "finished"
                    finished_at_claim.add(task.id)
                else:
                    claimed[task.id] = "kept"
            if not batch:
                await asyncio.sleep(0.005)

    outcomes: dict[int, CancelOutcome] = {}

    async def canceller(chunk: list[int]) -> None:
        for task_id in chunk:
            outcomes[task_id] = (await request_cancel(engine, task_id)).outcome
            await asyncio.sleep(0)

    order = ids[:]
    rng.shuffle(order)
    claimers = [asyncio.create_task(claimer(f"w{i}")) for i in range(3)]
    await asyncio.gather(*(canceller(order[i::4]) for i in range(4)))
    stop.set()
    await asyncio.gather(*claimers)

    async with engine.connect() as conn:
        rows = {
            row.id: row
            for row in (await conn.execute(select(tasks.c.id, tasks.c.status, tasks.c.cancel_requested, tasks.c.fence)))
        }
    seen = dict.fromkeys(CancelOutcome, 0)
    for task_id, outcome in outcomes.items():
        seen[outcome] += 1
        row = rows[task_id]
        if outcome == CancelOutcome.CANCELLED:
            # Cancelled while queued: no claim ever got it, and none will.
            assert row.status == states.CANCELLED and row.fence == 0 and task_id not in claimed
        elif outcome == CancelOutcome.CANCEL_REQUESTED:
            # It was running: its claimer has it and sees the request.
            assert task_id in claimed and row.cancel_requested and row.fence == 1
            assert row.status == (states.SUCCEEDED if claimed[task_id] == "finished" else states.RUNNING)
        else:
            assert outcome == CancelOutcome.ALREADY_FINISHED
            assert task_id in finished_at_claim and row.status == states.SUCCEEDED and not row.cancel_requested
    assert len(outcomes) == 1000
    # The race was real: each outcome happened.
    assert seen[CancelOutcome.CANCELLED] and seen[CancelOutcome.CANCEL_REQUESTED]
    assert await queue.claim("late", ["race"], 1000, LEASE) == []


async def test_many_claimers_at_once_never_exceed_the_global_limit(db_url):
    engines = [create_engine(db_url) for _ in range(6)]  # six "workers", six pools
    queues = [TaskQueue(e) for e in engines]
    for _ in range(40):
        await queues[0].enqueue("download")
    running_counts = []
    try:
        for round_ in range(5):
            start = asyncio.Event()

            async def claim(queue: TaskQueue, name: str, start: asyncio.Event = start) -> list:
                await start.wait()
                return await queue.claim(name, ["download"], 3, LEASE, global_limit=3)

            racers = [
                asyncio.create_task(claim(q, f"w{round_}-{i}-{j}")) for i, q in enumerate(queues) for j in range(2)
            ]
            await asyncio.sleep(0.05)  # every racer is waiting on the same event
            start.set()
            batches = await asyncio.gather(*racers)
            won = [task for batch in batches for task in batch]
            async with engines[0].connect() as conn:
                running = (
                    (await conn.execute(select(tasks.c.id).where(tasks.c.status == states.RUNNING))).scalars().all()
                )
            running_counts.append(len(running))
            assert len(won) == 3 == len(running), (round_, len(won), len(running))
            for task in won:  # free the slots for the next round
                assert await queues[0].succeed(task.lease, None)
    finally:
        for e in engines:
            await e.dispose()
    assert running_counts == [3] * 5


async def test_half_open_lets_exactly_one_trial_through_across_processes(db_url):
    engines = [create_engine(db_url) for _ in range(3)]
    breakers = [
        CircuitBreaker(e, failure_threshold=1, cooldown=timedelta(seconds=0.3), trial_timeout=timedelta(seconds=30))
        for e in engines
    ]
    try:
        opened = await breakers[0].record_failure("chan")
        assert opened.state == OPEN
        while await database_time(engines[0]) <= opened.open_until:
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*(b.allow("chan") for b in breakers for _ in range(4)))
        allowed = [ok for ok, _ in results if ok]
        refused_until = {until for ok, until in results if not ok}
        assert len(allowed) == 1, results
        assert len(refused_until) == 1 and None not in refused_until  # all wait for the one trial's lease
        assert (await breakers[1].state("chan")).state == HALF_OPEN
        assert not (await breakers[2].allow("chan"))[0]  # still one trial at a time
        await breakers[1].record_success("chan")  # the trial succeeded: closed for everyone
        assert (await breakers[2].state("chan")).state == CLOSED
        assert all(ok for ok, _ in await asyncio.gather(*(b.allow("chan") for b in breakers)))
    finally:
        for e in engines:
            await e.dispose()


async def test_a_trial_whose_caller_vanished_is_not_waited_for_forever(engine):
    breaker = CircuitBreaker(
        engine, failure_threshold=1, cooldown=timedelta(seconds=0.1), trial_timeout=timedelta(seconds=0.3)
    )
    opened = await breaker.record_failure("x")
    while await database_time(engine) <= opened.open_until:
        await asyncio.sleep(0.05)
    assert (await breaker.allow("x"))[0]  # the trial; its caller then disappears
    ok, until = await breaker.allow("x")
    assert not ok and until is not None
    while await database_time(engine) <= until:
        await asyncio.sleep(0.05)
    assert (await breaker.allow("x"))[0]  # a new trial after the first one's lease
    failed = await breaker.record_failure("x")
    assert failed.state == OPEN
