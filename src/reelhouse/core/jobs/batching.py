"""Group task completions that arrive while the previous group is being written.

No timer: the first completion is written at once; completions that finish during that write
go out together in the next transaction. Under load this turns N small transactions into a
few larger ones without delaying an idle worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Flush = Callable[[dict[int, Any]], Awaitable[set[int]]]


class CompletionBatcher:
    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._pending: dict[int, tuple[Any, asyncio.Future[bool]]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, task_id: int, result: Any) -> bool:
        """Record a success; returns whether the task was still ours when written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[task_id] = (result, future)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_until_empty())
        # Shielded: a cancelled caller must not lose a completion already handed over.
        return await asyncio.shield(future)

    async def _write_until_empty(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                written = await self._flush({task_id: result for task_id, (result, _) in batch.items()})
            except Exception as exc:  # the callers decide (their tasks' leases expire and rerun)
                for _, future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for task_id, (_, future) in batch.items():
                if not future.done():
                    future.set_result(task_id in written)
