"""A real worker process for the multi-process engine tests.

Usage: python worker_process.py DB_URL WORKER_ID LEASE_SECONDS CONCURRENCY
Handler `exec.record` inserts the task id into `execution_log`, whose unique constraint turns
any double execution into an error the test sees. `exec.slow` sleeps first (payload `sleep`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from sqlalchemy import text

from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.worker import Worker, WorkerOptions


async def main(url: str, worker_id: str, lease: float, concurrency: int) -> None:
    engine = create_engine(url)
    registry = TaskRegistry()

    async def record(ctx):
        await asyncio.sleep(ctx.payload.get("sleep", 0))
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO execution_log (task_id, worker) VALUES (:t, :w)"),
                               {"t": ctx.task.id, "w": worker_id})
        return {"worker": worker_id}

    registry.register(TaskKind("exec.record", record))
    registry.register(TaskKind("exec.slow", record))
    worker = Worker(engine, registry, WorkerOptions(
        worker_id=worker_id, concurrency=concurrency, lease=timedelta(seconds=lease),
        poll_interval=0.1, shutdown_grace=5,
    ))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
