"""A worker process running the live task kinds, configured from the environment.

Usage: python live_worker.py WORKER_ID LEASE_SECONDS
The SIGKILL test starts one, kills it during a live transcode, and starts another.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from reelhouse.config import Settings
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.live.kinds import LIVE_KINDS
from reelhouse.live.plugin import setup


async def main(worker_id: str, lease: float) -> None:
    runtime = build_runtime(Settings(), load_domains=False)
    domain = setup(runtime)
    worker = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id=worker_id,
            concurrency=4,
            lease=timedelta(seconds=lease),
            poll_interval=0.1,
            kinds=list(LIVE_KINDS),
            shutdown_grace=2,
            capabilities=["cpu", "libx264"],
        ),
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await domain.services.aclose()
    await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
