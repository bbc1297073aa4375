"""Group task completions that arrive while the previous group is being written.

No timer: the first completion is written at once; completions that finish during that write
go out together in the next transaction. Under load this turns N small transactions into a
few larger ones without delaying an idle worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger("reelhouse.worker")

K = TypeVar("K", bound=Hashable)  # what identifies a run: the worker uses its Lease


class CompletionBatcher(Generic[K]):
    def __init__(
        self, flush: Callable[[dict[K, Any]], Awaitable[set[K]]], *, give_up_after: float = 60.0, max_delay: float = 2.0
    ) -> None:
        """`give_up_after`: seconds of failed writes before the runs are left to lease expiry.
        While the writes are retried the runs still count as running, so the worker's
        heartbeat keeps their leases: nothing reruns as long as we keep trying."""
        self._flush = flush
        self._give_up_after = give_up_after
        self._max_delay = max_delay
        self._pending: dict[K, tuple[Any, asyncio.Future[bool]]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, key: K, result: Any) -> bool:
        """Record a success; returns whether the task was still ours when written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = (result, future)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_until_empty())
        # Shielded: a cancelled caller must not lose a completion already handed over.
        return await asyncio.shield(future)

    async def _write_until_empty(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                written = await self._flush_with_retries({key: r for key, (r, _) in batch.items()})
            except Exception as exc:  # the callers decide (their tasks' leases expire and rerun)
                for _, future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for key, (_, future) in batch.items():
                if not future.done():
                    future.set_result(key in written)

    async def _flush_with_retries(self, results: dict[K, Any]) -> set[K]:
        """A finished run must not be lost to a passing database error (deadlock victim, a
        restart, a full connection table): that would rerun work that is already done. The
        write is a compare-and-set on our lease, so repeating it is safe."""
        delay, attempt = min(0.05, self._max_delay), 0
        deadline = time.monotonic() + self._give_up_after
        while True:
            attempt += 1
            try:
                return await self._flush(results)
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "writing %d completions failed (attempt %d), retrying: %s",
                    len(results),
                    attempt,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    extra={"component": "worker"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
