"""A worker process running the archive's task kinds, configured from the environment.

Usage: python archive_worker.py WORKER_ID LEASE_SECONDS
The SIGKILL tests start it, kill it mid-transfer and start another one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from reelhouse.archive.plugin import setup
from reelhouse.config import Settings
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime


async def main(worker_id: str, lease: float) -> None:
    runtime = build_runtime(Settings(), load_domains=False)
    setup(runtime)
    worker = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id=worker_id,
            concurrency=2,
            lease=timedelta(seconds=lease),
            poll_interval=0.1,
            cancel_poll_interval=0.2,
            shutdown_grace=5,
        ),
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
