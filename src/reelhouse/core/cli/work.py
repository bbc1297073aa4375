"""Commands that queue work and wait for it: is anyone serving the queue, and if not, the
command does the work itself (a machine with nothing running still gets its encode or VOD)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from reelhouse.core.jobs.worker import Worker
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.core.runtime import Runtime

NO_WORKER_HINT = "start one with `reelhouse serve` (API + worker) or `reelhouse worker`"


async def workers_serving(runtime: Runtime, kinds: Iterable[str]) -> list[str]:
    """Ids of healthy workers (fresh heartbeat, not stopped) that claim any of `kinds`."""
    wanted = set(kinds)
    listed = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    return [w["id"] for w in listed if w["healthy"] and wanted & set(w["kinds"] or ())]


def start_local_worker(
    runtime: Runtime, kinds: Iterable[str], *, capabilities: list[str] | None = None
) -> tuple[Worker, asyncio.Task[None]]:
    """A worker in this process for `kinds` only; stop it with `worker.request_stop()`."""
    options = runtime.worker_options(capabilities, kinds=list(kinds))
    options.worker_id += "-cli"
    options.poll_interval = min(options.poll_interval, 0.5)
    worker = Worker(runtime.engine, runtime.registry, options)
    return worker, asyncio.create_task(worker.run(), name="cli-worker")


async def stop_local_worker(worker: Worker | None, task: asyncio.Task[None] | None) -> None:
    if worker is not None and task is not None:
        worker.request_stop()
        await asyncio.gather(task, return_exceptions=True)
