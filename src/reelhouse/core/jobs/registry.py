"""Task kinds: the handler a kind runs and the engine settings that apply to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from reelhouse.core.jobs.context import TaskContext

Handler = Callable[["TaskContext"], Awaitable[Any]]
# Kernel side of a remote-capable kind, run with a database-backed context of the same run
# after the handler returned (in a database worker right after it, in NATS mode when the
# result event arrives): publication of the outputs, follow-up tasks. Returns the task result.
FinishHook = Callable[["TaskContext", Any], Awaitable[Any]]
# Run by whoever moved the task to failed/dead/cancelled (the compare-and-set winner), inside
# that transaction: `settle(conn, job_id, status, reason)`, e.g. mark an asset failed. So a
# job never reads as failed while its domain rows still say "encoding", and a worker dying
# between the two writes cannot leave them so. A hook that raises is logged and rolled back to
# its savepoint; the task's transition stands.
SettleHook = Callable[["AsyncConnection", int, str, str], Awaitable[None]]
SettleLookup = Callable[[str], SettleHook | None]  # a kind's name -> its settle hook


@dataclass(frozen=True)
class TaskKind:
    name: str
    handler: Handler
    max_attempts: int = 5
    backoff_base: float = 2.0  # seconds
    backoff_cap: float = 600.0
    timeout: float | None = None  # seconds a run may take before it counts as a transient failure
    priority: int = 0  # default priority of new tasks (higher runs first)
    concurrency_per_worker: int | None = None  # None: limited by the worker's pool only
    concurrency_global: int | None = None  # across every worker, enforced at claim time
    required_capability: str | None = None  # e.g. "h264_nvenc"; None runs anywhere
    # The handler needs no database (payload, storage, progress, fenced outputs only): with
    # NATS_URL set such tasks are published for remote workers (core/jobs/remote).
    remote: bool = False
    finish: FinishHook | None = None
    settle: SettleHook | None = None


@dataclass
class TaskRegistry:
    kinds: dict[str, TaskKind] = field(default_factory=dict)

    def settle_hook(self, name: str) -> SettleHook | None:
        kind = self.kinds.get(name)
        return None if kind is None else kind.settle

    def register(self, kind: TaskKind) -> TaskKind:
        if kind.name in self.kinds:
            raise ValueError(f"task kind {kind.name!r} registered twice")
        self.kinds[kind.name] = kind
        return kind

    def task(self, name: str, **settings: Any) -> Callable[[Handler], Handler]:
        """Decorator form: `@registry.task("vod.download", max_attempts=5)`."""

        def wrap(handler: Handler) -> Handler:
            self.register(TaskKind(name=name, handler=handler, **settings))
            return handler

        return wrap

    def get(self, name: str) -> TaskKind | None:
        return self.kinds.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.kinds
