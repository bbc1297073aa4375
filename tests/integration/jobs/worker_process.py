"""A real worker process for the multi-process engine tests.

Usage: python worker_process.py DB_URL WORKER_ID LEASE_SECONDS CONCURRENCY [CLOCK_OFFSET_SECONDS [KINDS]]

Handler `exec.record` inserts the task id into `execution_log`, whose unique constraint turns
any double execution into an error the test sees. `exec.slow` sleeps first (payload `sleep`).
`soak.effect` (the chaos soak) records a side effect in `soak_effects` through a fenced
transaction, if the task has none yet: a run that lost its lease cannot write, so every task's
effect is there exactly once however many runs it took.

CLOCK_OFFSET_SECONDS shifts every clock reading reelhouse makes in this process (a host whose
clock is wrong); the engine must not care. KINDS (comma-separated) limits what it claims.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from sqlalchemy import text

from reelhouse.core.db import types as db_types
from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.worker import Worker, WorkerOptions

EFFECT_SQL = {
    "postgresql": "INSERT INTO soak_effects (task_id, fence, worker) SELECT :t, :f, :w"
    " WHERE NOT EXISTS (SELECT 1 FROM soak_effects WHERE task_id = :t)",
}
EFFECT_SQL["sqlite"] = EFFECT_SQL["postgresql"]


def skew_clock(offset: float) -> None:
    """Every `utcnow` reelhouse imported now returns this host's wrong time."""
    real = db_types.utcnow

    def skewed():
        return real() + timedelta(seconds=offset)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("reelhouse") and getattr(module, "utcnow", None) is real:
            module.utcnow = skewed
    return skewed


async def main(
    url: str, worker_id: str, lease: float, concurrency: int, offset: float, kinds: list[str] | None
) -> None:
    engine = create_engine(url)
    registry = TaskRegistry()

    async def record(ctx):
        await asyncio.sleep(ctx.payload.get("sleep", 0))
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO execution_log (task_id, worker) VALUES (:t, :w)"), {"t": ctx.task.id, "w": worker_id}
            )
        return {"worker": worker_id}

    async def effect(ctx):
        await asyncio.sleep(ctx.payload.get("before", 0))
        async with ctx.fenced("record the side effect") as conn:
            await conn.execute(
                text(EFFECT_SQL[engine.dialect.name]), {"t": ctx.task.id, "f": ctx.fence, "w": worker_id}
            )
        await asyncio.sleep(ctx.payload.get("after", 0))

    registry.register(TaskKind("exec.record", record))
    registry.register(TaskKind("exec.slow", record))
    registry.register(TaskKind("soak.effect", effect))
    registry.register(TaskKind("soak.pause", effect))
    options = WorkerOptions(
        worker_id=worker_id,
        concurrency=concurrency,
        lease=timedelta(seconds=lease),
        poll_interval=0.1,
        shutdown_grace=5,
        kinds=kinds,
    )
    if offset:
        options.clock = skew_clock(offset)
    worker = Worker(engine, registry, options)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await engine.dispose()


if __name__ == "__main__":
    offset = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    kinds = sys.argv[6].split(",") if len(sys.argv) > 6 else None
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), offset, kinds))
