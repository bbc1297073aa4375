"""Remote workers over NATS JetStream (issue 15): real NATS, real worker processes without
database credentials, PostgreSQL behind an in-process kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from reelhouse.core.db.models import task_attempts, tasks, workers
from reelhouse.core.jobs import control, states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.remote.kernel import nats_status
from reelhouse.core.jobs.workers_table import request_drain
from tests.integration.nats.conftest import wait_until

pytestmark = pytest.mark.slow


async def task_row(engine, task_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.id == task_id))).mappings().one()


async def history(engine, task_id: int) -> list[str]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(task_attempts.c.outcome).where(task_attempts.c.task_id == task_id))).scalars()
        )


async def worker_row(engine, worker_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(workers).where(workers.c.id == worker_id))).mappings().first()


def violations(lock_dir: str) -> list[str]:
    return sorted(p.name for p in Path(lock_dir).glob("violation-*"))


async def test_job_runs_on_nats_workers_and_sigkill_is_redelivered_without_overlap(
    pg_engine, kernel_factory, workers, nats_env
):
    queue = TaskQueue(pg_engine)
    async with kernel_factory(pg_engine):
        workers.start("w-a")
        workers.start("w-b")
        done = await queue.enqueue("nx.sleep", {"sleep": 0.5})
        victim = await queue.enqueue("nx.sleep", {"sleep": 6})

        async def finished(task_id: int) -> bool:
            return (await task_row(pg_engine, task_id))["status"] in states.TASK_FINAL

        await wait_until(lambda: finished(done.task_id), 60, "a short task finishes on a NATS worker")
        row = await task_row(pg_engine, done.task_id)
        assert row["status"] == states.SUCCEEDED
        assert row["result"]["worker"] in ("w-a", "w-b")

        async def running() -> bool:
            return (await task_row(pg_engine, victim.task_id))["status"] == states.RUNNING

        await wait_until(running, 60, "the long task starts")
        owner = (await task_row(pg_engine, victim.task_id))["lease_owner"]
        await asyncio.sleep(1.0)
        workers.kill(owner)  # SIGKILL mid-task: no ack, no event, the lease lapses
        await wait_until(lambda: finished(victim.task_id), 90, "the killed worker's task is redelivered and finishes")
        row = await task_row(pg_engine, victim.task_id)
        survivor = "w-b" if owner == "w-a" else "w-a"
        assert row["status"] == states.SUCCEEDED
        assert row["result"]["worker"] == survivor
        assert row["fence"] == 2  # exactly two claims: the lost run and the one that finished
        assert await history(pg_engine, victim.task_id) == [states.Outcome.LOST]
        assert violations(nats_env["LOCK_DIR"]) == []
        assert workers.stop_all() == []


async def test_in_progress_keeps_a_long_task_past_ack_wait(pg_engine, kernel_factory, workers, nats_env):
    """AckWait is 1 s here; the task takes 5 s on one worker while another waits for work:
    `in_progress()` keeps the message, so it is never redelivered (one claim, no lost run)."""
    queue = TaskQueue(pg_engine)
    async with kernel_factory(pg_engine):
        workers.start("w-a")
        workers.start("w-b")
        long = await queue.enqueue("nx.sleep", {"sleep": 5})

        async def finished() -> bool:
            return (await task_row(pg_engine, long.task_id))["status"] in states.TASK_FINAL

        await wait_until(finished, 90, "the long task finishes")
        row = await task_row(pg_engine, long.task_id)
        assert row["status"] == states.SUCCEEDED
        assert row["fence"] == 1 and row["attempts"] == 1
        assert await history(pg_engine, long.task_id) == []
        started = sorted(p.name for p in Path(nats_env["LOCK_DIR"]).glob(f"started-{long.task_id}-*"))
        assert len(started) == 1, started
        assert workers.stop_all() == []


async def test_capability_routing_waits_for_a_capable_worker(pg_engine, kernel_factory, workers):
    queue = TaskQueue(pg_engine)
    async with kernel_factory(pg_engine) as kernel:
        workers.start("w-cpu")
        workers.start("w-gpu", extra="fakegpu")
        first = await queue.enqueue("nx.sleep", {"sleep": 0.2}, required_capability="fakegpu")

        async def status_of(task_id: int) -> str:
            return (await task_row(pg_engine, task_id))["status"]

        async def succeeded(task_id: int) -> bool:
            return await status_of(task_id) == states.SUCCEEDED

        await wait_until(lambda: succeeded(first.task_id), 60, "the fakegpu task runs")
        assert (await task_row(pg_engine, first.task_id))["result"]["worker"] == "w-gpu"

        assert workers.stop("w-gpu") == 0  # every capable worker stopped
        second = await queue.enqueue("nx.sleep", {"sleep": 0.2}, required_capability="fakegpu")

        async def waiting() -> bool:
            detail = (await task_row(pg_engine, second.task_id))["progress_detail"] or {}
            return detail.get("waiting_for") == "waiting for a worker with capability fakegpu"

        await wait_until(waiting, 30, "the job says it waits for a worker with capability fakegpu")
        job = await control.get_job(pg_engine, second.job_id)  # GET /v1/jobs/{id}
        assert job["waiting_for"] == "waiting for a worker with capability fakegpu"
        status = (await nats_status(kernel.bridge))["nats"]  # the `nats` section of /status
        assert status["connected"] and [w["task_id"] for w in status["waiting_for_capability"]] == [second.task_id]
        await asyncio.sleep(2)
        assert await status_of(second.task_id) == states.QUEUED  # the cpu worker never takes it

        workers.start("w-gpu2", extra="fakegpu")
        await wait_until(lambda: succeeded(second.task_id), 60, "a capable worker registers and the task runs")
        row = await task_row(pg_engine, second.task_id)
        assert row["result"]["worker"] == "w-gpu2"
        assert (row["progress_detail"] or {}).get("stage") != "waiting"
        assert workers.stop_all() == []


async def test_drain_finishes_the_current_task_and_takes_no_more(pg_engine, kernel_factory, workers):
    queue = TaskQueue(pg_engine)
    async with kernel_factory(pg_engine):
        proc = workers.start("w-drain")
        first = await queue.enqueue("nx.sleep", {"sleep": 4})

        async def running() -> bool:
            return (await task_row(pg_engine, first.task_id))["status"] == states.RUNNING

        await wait_until(running, 60, "the first task starts")
        rest = [await queue.enqueue("nx.sleep", {"sleep": 0.2}) for _ in range(2)]
        await wait_until(lambda: worker_row(pg_engine, "w-drain"), 30, "the worker is mirrored into workers")
        assert await request_drain(pg_engine, "w-drain")  # what POST /v1/workers/{id}/drain does
        await asyncio.to_thread(proc.wait, 60)
        assert proc.returncode == 0
        row = await task_row(pg_engine, first.task_id)
        assert row["status"] == states.SUCCEEDED and row["result"]["worker"] == "w-drain"
        for queued in rest:
            assert (await task_row(pg_engine, queued.task_id))["status"] == states.QUEUED

        async def drained() -> bool:
            found = await worker_row(pg_engine, "w-drain")
            return found is not None and found["status"] == "drained" and not found["drain_requested"]

        await wait_until(drained, 30, "the registry shows the worker drained")
        workers.start("w-next")

        async def rest_done() -> bool:
            rows = [await task_row(pg_engine, q.task_id) for q in rest]
            return all(row["status"] == states.SUCCEEDED for row in rows)

        await wait_until(rest_done, 60, "the remaining tasks run on the other worker")
        for queued in rest:
            assert (await task_row(pg_engine, queued.task_id))["result"]["worker"] == "w-next"
        assert workers.stop_all() == []


NATS_SERVER = "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_nats(port: int, store: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [NATS_SERVER, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("nats-server did not start")


async def test_restarting_nats_mid_job_workers_and_kernel_reconnect(pg_engine, kernel_factory, workers, tmp_path):
    """Our own nats-server (the machine's shared one is never restarted): stopped while a task
    runs and started again on the same store; kernel and worker reconnect and the job finishes."""
    if not Path(NATS_SERVER).exists():
        pytest.fail(f"{NATS_SERVER} is required (Debian package nats-server)")
    port, store = _free_port(), tmp_path / "jetstream"
    url = f"nats://127.0.0.1:{port}"
    server = _start_nats(port, store)
    queue = TaskQueue(pg_engine)
    try:
        async with kernel_factory(pg_engine, url=url, lease=10.0):
            workers.start("w-restart", url=url)
            task = await queue.enqueue("nx.sleep", {"sleep": 6})

            async def running() -> bool:
                return (await task_row(pg_engine, task.task_id))["status"] == states.RUNNING

            await wait_until(running, 60, "the task starts")
            await asyncio.sleep(1)
            server.send_signal(signal.SIGTERM)
            server.wait(20)
            await asyncio.sleep(1.5)
            server = _start_nats(port, store)

            async def finished() -> bool:
                return (await task_row(pg_engine, task.task_id))["status"] in states.TASK_FINAL

            await wait_until(finished, 90, "the task finishes after NATS came back")
            row = await task_row(pg_engine, task.task_id)
            assert row["status"] == states.SUCCEEDED and row["result"]["worker"] == "w-restart"
            after = await queue.enqueue("nx.sleep", {"sleep": 0.2})  # new work flows after the restart

            async def after_done() -> bool:
                return (await task_row(pg_engine, after.task_id))["status"] == states.SUCCEEDED

            await wait_until(after_done, 60, "a task enqueued after the restart runs")
            assert workers.stop_all() == []
    finally:
        server.kill()
        server.wait()


async def test_reelhouse_worker_drain_command_drains_a_nats_worker(pg_engine, kernel_factory, workers, nats_env):
    queue = TaskQueue(pg_engine)
    async with kernel_factory(pg_engine):
        proc = workers.start("w-cli")
        task = await queue.enqueue("nx.sleep", {"sleep": 2})

        async def running() -> bool:
            return (await task_row(pg_engine, task.task_id))["status"] == states.RUNNING

        await wait_until(running, 60, "the task starts")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN")}
        env.update(nats_env, NATS_URL=workers.url, WORKER_ID="w-cli")
        drained = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "reelhouse.cli", "worker", "--drain", "--wait", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert '"drained"' in drained.stdout
        assert (await task_row(pg_engine, task.task_id))["status"] == states.SUCCEEDED
        await asyncio.to_thread(proc.wait, 30)
        assert proc.returncode == 0
