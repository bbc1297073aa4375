"""A worker process running the vault's task kinds, configured from the environment.

Usage: python vault_worker.py WORKER_ID LEASE_SECONDS
The SIGKILL test starts it, kills it while the release job mails, and starts another one.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from reelhouse.config import Settings
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.vault.plugin import setup
from reelhouse.vault.tasks import VAULT_KINDS


async def main(worker_id: str, lease: float) -> None:
    runtime = build_runtime(Settings(), load_domains=False)
    domain = setup(runtime)
    assert domain is not None, "the vault is not configured in this environment"
    worker = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id=worker_id,
            concurrency=3,
            lease=timedelta(seconds=lease),
            poll_interval=0.05,
            kinds=list(VAULT_KINDS),
            shutdown_grace=5,
        ),
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await domain.services.aclose()
    await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
