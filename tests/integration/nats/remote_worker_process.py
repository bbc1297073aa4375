"""A NATS-mode worker process for the remote-worker tests: no database anywhere in it.

Usage: python remote_worker_process.py   (environment: NATS_URL, NATS_PREFIX, NATS_ACK_WAIT,
NATS_WORKER_TTL, WORKER_ID, WORKER_EXTRA_CAPABILITIES, LOCK_DIR)

Kind `nx.sleep` (remote): holds an exclusive flock on LOCK_DIR/task-<id> while it runs, so a
second run of the same task at the same time (on any worker process) writes a violation file
the test looks for; sleeps `sleep` seconds reporting progress; returns the worker id.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from pathlib import Path

from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.remote.settings import NatsSettings
from reelhouse.core.jobs.remote.worker import RemoteWorker

WORKER_ID = os.environ["WORKER_ID"]
LOCK_DIR = Path(os.environ["LOCK_DIR"])


async def sleeper(ctx):
    lock = (LOCK_DIR / f"task-{ctx.task.id}").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        (LOCK_DIR / f"violation-{ctx.task.id}-{WORKER_ID}").write_text("ran twice at once")
    try:
        (LOCK_DIR / f"started-{ctx.task.id}-{WORKER_ID}").write_text(str(ctx.fence))
        total = float(ctx.payload.get("sleep", 0))
        steps = max(1, int(total / 0.25))
        for step in range(steps):
            await asyncio.sleep(total / steps)
            await ctx.report_progress((step + 1) / steps, stage="sleeping")
        if ctx.payload.get("fail"):
            from reelhouse.core.jobs.errors import PermanentError

            raise PermanentError(ctx.payload["fail"])
        return {"worker": WORKER_ID, "fence": ctx.fence}
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    reg.register(TaskKind("nx.sleep", sleeper, remote=True, max_attempts=3, backoff_base=0.2))
    return reg


async def main() -> None:
    worker = RemoteWorker(
        registry(),
        url=os.environ["NATS_URL"],
        settings=NatsSettings(),
        worker_id=WORKER_ID,
        capabilities=["cpu"],
        concurrency=int(os.environ.get("WORKER_CONCURRENCY", "1")),
        shutdown_grace=5,
        progress_interval=0.2,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    assert "DATABASE_URL" not in os.environ, "a NATS-mode worker holds no database credentials"
    asyncio.run(main())
    sys.exit(0)
