"""What a task handler gets: its payload, progress reporting, follow-up enqueue, cancellation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from reelhouse.core.jobs.queue import ClaimedTask, Enqueued, TaskQueue


@dataclass
class TaskContext:
    task: ClaimedTask
    queue: TaskQueue
    owner: str
    logger: logging.Logger
    progress_interval: float = 2.0
    _last_progress_save: float = field(default=0.0, init=False)

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def attempt(self) -> int:
        return self.task.attempts

    async def report_progress(self, fraction: float, *, force: bool = False, **detail: Any) -> bool:
        """Persist progress, at most every `progress_interval` seconds (the database is not a
        ticker). Returns whether it was written."""
        now = time.monotonic()
        if not force and now - self._last_progress_save < self.progress_interval:
            return False
        self._last_progress_save = now
        await self.queue.save_progress(self.task.id, self.owner, fraction, detail or None)
        return True

    async def enqueue_next(self, kind: str, payload: dict[str, Any], **options: Any) -> Enqueued:
        """Add a follow-up task to the same job (download -> upload). Enqueued before this task
        finishes, so the job never looks complete between the two."""
        return await self.queue.enqueue(kind, payload, job_id=self.task.job_id, **options)
