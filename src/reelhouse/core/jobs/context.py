"""What a task handler gets: its payload, progress reporting, follow-up enqueue, and fencing.

Fencing: every write a run makes through the context is checked against the run's fencing
token, so a run that lost its lease (paused past it, partitioned, its worker presumed dead)
cannot change anything the run that took over owns. Handlers use:
- `async with ctx.fenced("what") as conn:` for database side effects: the transaction commits
  only while the run holds its task (the task row is locked and checked first);
- `await ctx.check_lease("what")` before a side effect outside the database;
- `ctx.outputs(storage, prefix)` for files: keys scoped to this run, writes and deletes
  checked, publication by compare-and-set (see fencing.py).
A refused write raises `LeaseLost` (logged here); the worker then records nothing for the run.
Progress is the exception: it is reported from inside subprocess runners' callbacks, so a
refused progress write stops the run the way a cancel does (the worker's `stop_lost_run`:
ffmpeg or yt-dlp get SIGTERM, then SIGKILL) and returns False. A database that cannot be
reached is waited for by the lease check and `fenced` (TaskQueue); a progress write it
refuses is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.engine import database_unavailable
from reelhouse.core.jobs.errors import LeaseLost
from reelhouse.core.jobs.queue import ClaimedTask, Enqueued, Lease, TaskQueue

if TYPE_CHECKING:
    from reelhouse.core.jobs.fencing import FencedOutputs
    from reelhouse.core.storage import Storage

log = logging.getLogger("reelhouse.fencing")


@dataclass
class TaskContext:
    task: ClaimedTask
    queue: TaskQueue
    owner: str
    logger: logging.Logger
    progress_interval: float = 2.0
    # Set by the worker: stops this run through cancellation. Without it (a handler driven by
    # hand) a refused progress write raises LeaseLost like the other fenced writes.
    stop_lost_run: Callable[[], None] | None = None
    _last_progress_save: float = field(default=0.0, init=False)
    # False in a NATS-mode worker's context (remote/context.py): no database behind it.
    has_database: bool = field(default=True, init=False)

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def attempt(self) -> int:
        return self.task.attempts

    @property
    def lease(self) -> Lease:
        return Lease(self.task.id, self.task.fence, self.owner, self.task.attempts)

    @property
    def fence(self) -> int:
        """This run's fencing token: unique per claim of the task, increasing."""
        return self.task.fence

    def refused(self, action: str) -> LeaseLost:
        """Log a refused write and return the error to raise."""
        error = LeaseLost(self.task.id, self.task.fence, action)
        log.warning(
            "stale run refused: %s",
            error.reason,
            extra={"component": "fencing", "task_id": self.task.id, "fence": self.task.fence, "action": action},
        )
        return error

    async def check_lease(self, action: str) -> None:
        """Raise LeaseLost (logged) unless this run still holds its task."""
        if not await self.queue.still_holds(self.lease):
            raise self.refused(action)

    @asynccontextmanager
    async def fenced(self, action: str = "write") -> AsyncIterator[AsyncConnection]:
        """A transaction that commits only while this run holds its task."""
        try:
            async with self.queue.fenced(self.lease, action) as conn:
                yield conn
        except LeaseLost:
            raise self.refused(action) from None

    def outputs(self, storage: Storage, prefix: str) -> FencedOutputs:
        """Files this run writes under `prefix`, in a scope of their own (`prefix/run-<fence>/`)."""
        from reelhouse.core.jobs.fencing import FencedOutputs

        return FencedOutputs(self, storage, prefix)

    async def report_progress(self, fraction: float, *, force: bool = False, **detail: Any) -> bool:
        """Persist progress, at most every `progress_interval` seconds (the database is not a
        ticker). Returns whether it was written; raises LeaseLost if the run lost its task."""
        now = time.monotonic()
        if not force and now - self._last_progress_save < self.progress_interval:
            return False
        self._last_progress_save = now
        try:
            saved = await self.queue.save_progress(self.lease, fraction, detail or None)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Progress is advisory and the next report replaces it: a database restarting under
            # a long encode must not fail the run (the heartbeat decides whether it holds on).
            log.warning(
                "progress not saved, the database is unreachable: %s",
                type(exc).__name__,
                extra={"component": "worker", "task_id": self.task.id},
            )
            return False
        if not saved:
            error = self.refused("report progress")
            if self.stop_lost_run is None:
                raise error
            self.stop_lost_run()
            return False
        return True

    async def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel this task."""
        return self.task.id in await self.queue.cancel_requested([self.task.id])

    async def mark_idle(self) -> None:
        """Say this run found nothing to do: retention forgets such housekeeping runs after
        JOB_RETENTION_IDLE instead of keeping them for JOB_RETENTION."""
        if not await self.queue.mark_idle(self.lease):
            raise self.refused("mark the run idle")

    async def enqueue_next(self, kind: str, payload: dict[str, Any], **options: Any) -> Enqueued:
        """Add a follow-up task to the same job (download -> upload), fenced: a stale run cannot
        add work. Enqueued before this task finishes, so the job never looks complete between
        the two."""
        async with self.fenced(f"enqueue {kind}") as conn:
            return await self.queue.enqueue(kind, payload, job_id=self.task.job_id, conn=conn, **options)
