"""Circuit breaker transitions (and how /status and /metrics show them), periodic tasks with
several schedulers, and the runbook's breaker reset SQL."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.models import periodic_runs, tasks
from reelhouse.core.jobs.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.scheduler import PeriodicTask, Scheduler
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime


async def past(engine, moment) -> None:
    """Wait until the database's clock is past `moment` (breakers run on it)."""
    while await database_time(engine) <= moment:
        await asyncio.sleep(0.05)


async def test_breaker_opens_half_opens_and_closes(engine):
    breaker = CircuitBreaker(engine, failure_threshold=3, cooldown=timedelta(seconds=0.3))
    scope = "somechannel"
    for expected in (1, 2):
        state = await breaker.record_failure(scope)
        assert state.state == CLOSED and state.failures == expected
    assert (await breaker.allow(scope))[0]
    opened = await breaker.record_failure(scope)
    assert opened.state == OPEN and opened.open_until is not None
    allowed, until = await breaker.allow(scope)
    assert not allowed and until == opened.open_until
    assert (await breaker.state("otherchannel")).state == CLOSED  # scopes are independent
    await past(engine, opened.open_until)
    assert (await breaker.allow(scope))[0]
    assert (await breaker.state(scope)).state == HALF_OPEN
    reopened = await breaker.record_failure(scope)  # a failed trial re-opens at once
    assert reopened.state == OPEN
    await past(engine, reopened.open_until)
    assert (await breaker.allow(scope))[0]
    await breaker.record_success(scope)
    closed = await breaker.state(scope)
    assert (closed.state, closed.failures, closed.open_until) == (CLOSED, 0, None)


async def test_runbook_reset_sql_closes_the_breaker(engine):
    breaker = CircuitBreaker(engine, failure_threshold=1, cooldown=timedelta(hours=1))
    await breaker.record_failure("")
    assert (await breaker.state("")).state == OPEN
    async with engine.begin() as conn:
        rows = (await conn.execute(text("SELECT key, value FROM kv WHERE key LIKE 'circuit_%'"))).all()
        assert {k for k, _ in rows} == {"circuit_state", "circuit_failures", "circuit_open_until"}
        await conn.execute(
            text("DELETE FROM kv WHERE key IN ('circuit_state','circuit_failures','circuit_open_until')")
        )
    assert (await breaker.state("")).state == CLOSED
    assert (await breaker.allow(""))[0]


async def test_breaker_state_in_status_and_metrics(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CIRCUIT_FAILURE_THRESHOLD", "2")
    settings = Settings()
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await runtime.breaker.record_failure("chan_a")
        await runtime.breaker.record_failure("chan_a")
        status = (await client.get("/status")).json()
        assert status["circuit_state"] == OPEN and status["circuit_failures"] == 2
        assert status["circuit_breaker"]["scopes"][0]["scope"] == "chan_a"
        body = (await client.get("/metrics")).text
        assert 'vod_circuit_open{channel="chan_a"} 1.0' in body
        assert 'vod_circuit_breaker_state{channel="chan_a"} 2.0' in body
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failed_check"] == "circuit_breaker"
        await runtime.breaker.record_success("chan_a")
        assert (await client.get("/status")).json()["circuit_state"] == CLOSED
        assert 'vod_circuit_open{channel="chan_a"} 0.0' in (await client.get("/metrics")).text
    await runtime.aclose()


async def test_periodic_task_fires_once_per_period_with_three_schedulers(db_url):
    engines = [create_engine(db_url) for _ in range(3)]  # three "processes", three pools
    entry = PeriodicTask(name="retention.sweep", kind="retention.sweep", every=timedelta(minutes=5))
    schedulers = [Scheduler(e, [entry]) for e in engines]
    base = datetime(2026, 11, 22, 12, 0, 7, tzinfo=UTC)
    fired = []
    for offset in (0, 30, 200, 301, 320, 650):  # periods: 12:00, 12:00, 12:00, 12:05, 12:05, 12:10
        now = base + timedelta(seconds=offset)
        results = await asyncio.gather(*[s.tick(now) for s in schedulers])
        fired.append(sum(len(r) for r in results))
    assert fired == [1, 0, 0, 1, 0, 1]
    async with engines[0].connect() as conn:
        count = (
            await conn.execute(select(func.count()).select_from(tasks).where(tasks.c.kind == "retention.sweep"))
        ).scalar_one()
        periods = (
            (await conn.execute(select(periodic_runs.c.period_start).order_by(periodic_runs.c.period_start)))
            .scalars()
            .all()
        )
    assert count == 3
    assert [p.strftime("%H:%M") for p in periods] == ["12:00", "12:05", "12:10"]
    for e in engines:
        await e.dispose()


async def test_schedulers_running_concurrently_fire_each_period_once(db_url):
    engines = [create_engine(db_url) for _ in range(3)]
    entry = PeriodicTask(name="tick", kind="tick", every=timedelta(seconds=1))
    stop = asyncio.Event()
    runners = [asyncio.create_task(Scheduler(e, [entry]).run(stop, interval=0.05)) for e in engines]

    async def fired() -> list[str]:
        async with engines[0].connect() as conn:
            rows = (await conn.execute(select(tasks.c.payload).where(tasks.c.kind == "tick"))).scalars().all()
        return [r["period_start"] for r in rows]

    async with asyncio.timeout(60):
        while len(await fired()) < 4:  # four periods have gone by, each seen by three schedulers
            await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*runners)
    starts = await fired()
    assert len(starts) == len(set(starts)) >= 4
    for e in engines:
        await e.dispose()


def test_metrics_pass_promtool(db_url, tmp_path, monkeypatch):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool (Debian package prometheus) is required; `make test` installs it")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    async def scrape() -> str:
        settings = Settings()
        runtime = build_runtime(settings)

        async def fails(ctx):
            raise RuntimeError("boom")

        async def works(ctx):
            return None

        runtime.registry.register(TaskKind("promtool.fail", fails, max_attempts=1))
        runtime.registry.register(TaskKind("promtool.ok", works))
        queue = TaskQueue(runtime.engine)
        failing = await queue.enqueue("promtool.fail", max_attempts=1)
        working = await queue.enqueue("promtool.ok")
        await queue.enqueue("promtool.later", priority=3)
        await runtime.breaker.record_failure("x")
        worker = Worker(
            runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05, kinds=["promtool.fail", "promtool.ok"])
        )
        run = asyncio.create_task(worker.run())
        async with asyncio.timeout(60):  # until both have ended, however long that takes here
            while True:
                async with runtime.engine.connect() as conn:
                    ended = (
                        await conn.execute(
                            select(func.count())
                            .select_from(tasks)
                            .where(
                                tasks.c.id.in_([failing.task_id, working.task_id]),
                                tasks.c.status.in_(["dead", "succeeded"]),
                            )
                        )
                    ).scalar_one()
                if ended == 2:
                    break
                await asyncio.sleep(0.05)
        worker.request_stop()
        await run
        app = create_app(settings, runtime=runtime, background=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await client.get("/healthz")
            body = (await client.get("/metrics")).text
        await runtime.aclose()
        return body

    dead = 'reelhouse_task_transitions_total{kind="promtool.fail",outcome="dead"}'
    ok = 'reelhouse_task_transitions_total{kind="promtool.ok",outcome="succeeded"}'
    before = {dead: counter_value(dead), ok: counter_value(ok)}  # the registry is per process
    body = asyncio.run(scrape())
    assert sample(body, dead) == before[dead] + 1 and sample(body, ok) == before[ok] + 1
    assert 'reelhouse_queue_depth{priority="3"} 1.0' in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
    # The one accepted note: seed 002's gauge `webencode_jobs_total` keeps the runbook's name.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "webencode_jobs_total" not in line]
    assert result.returncode == 0 or problems == [], result.stdout + result.stderr


def sample(body: str, series: str) -> float:
    """The value of one series in an exposition (not its HELP or TYPE line)."""
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


def counter_value(series: str) -> float:
    from prometheus_client import REGISTRY, generate_latest

    try:
        return sample(generate_latest(REGISTRY).decode(), series)
    except AssertionError:
        return 0.0
