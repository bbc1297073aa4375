"""The task context of a NATS-mode worker: the same interface handlers of remote kinds use
(payload, progress, fenced outputs, cancel checks), with no database behind it.

Progress goes to the events stream (the kernel writes it with the run's fencing token); a
lease check is a request to a kernel (`rpc.lease`), so fenced outputs keep their guarantees:
every put and delete is checked against the run's fencing token in the database. What needs
the database itself (`fenced()`, `enqueue_next`) is refused: remote kinds do that in their
kernel-side `finish` hook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.queue import ClaimedTask, Enqueued, TaskQueue

LeaseCheck = Callable[[ClaimedTask], Awaitable[tuple[bool, bool]]]  # (held, cancel requested)
ProgressSink = Callable[[ClaimedTask, float, dict[str, Any]], Awaitable[None]]


@dataclass
class RemoteContext(TaskContext):
    lease_check: LeaseCheck | None = None
    progress_sink: ProgressSink | None = None
    _cancel_seen: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.has_database = False

    @classmethod
    def build(
        cls,
        task: ClaimedTask,
        owner: str,
        *,
        lease_check: LeaseCheck,
        progress_sink: ProgressSink,
        progress_interval: float,
        stop_lost_run: Callable[[], None] | None = None,
    ) -> RemoteContext:
        return cls(
            task=task,
            queue=cast(TaskQueue, None),  # no database here: every queue use is overridden
            owner=owner,
            logger=logging.getLogger(f"reelhouse.task.{task.kind}"),
            progress_interval=progress_interval,
            stop_lost_run=stop_lost_run,
            lease_check=lease_check,
            progress_sink=progress_sink,
        )

    async def _check(self) -> tuple[bool, bool]:
        assert self.lease_check is not None
        held, cancel = await self.lease_check(self.task)
        self._cancel_seen = self._cancel_seen or cancel
        return held, cancel

    async def check_lease(self, action: str) -> None:
        held, _ = await self._check()
        if not held:
            raise self.refused(action)

    async def cancel_requested(self) -> bool:
        if self._cancel_seen:
            return True
        _, cancel = await self._check()
        return cancel

    def note_cancel(self) -> None:
        self._cancel_seen = True

    async def report_progress(self, fraction: float, *, force: bool = False, **detail: Any) -> bool:
        now = time.monotonic()
        if not force and now - self._last_progress_save < self.progress_interval:
            return False
        self._last_progress_save = now
        assert self.progress_sink is not None
        await self.progress_sink(self.task, fraction, detail)
        return True

    @asynccontextmanager
    async def fenced(self, action: str = "write") -> AsyncIterator[AsyncConnection]:
        raise PermanentError(f"{self.task.kind} cannot {action} on a NATS worker (no database); not a remote kind")
        yield  # pragma: no cover

    async def mark_idle(self) -> None:
        return None

    async def enqueue_next(self, kind: str, payload: dict[str, Any], **options: Any) -> Enqueued:
        raise PermanentError(
            f"{self.task.kind} cannot enqueue {kind} on a NATS worker; do it in the kind's finish hook"
        )
