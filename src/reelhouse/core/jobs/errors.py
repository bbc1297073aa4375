"""Error classes a task handler raises to tell the engine what to do next.

Any other exception is treated as transient: retried with backoff until the kind's
`max_attempts`, then the task is dead. Handlers (and the libraries they call: media runner,
provider clients) raise these so the decision is made where the cause is understood.
"""

from __future__ import annotations

from datetime import datetime


class TaskError(Exception):
    """Base class; `reason` is the human-readable message stored on the task."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(TaskError):
    """Worth retrying later: network blips, disk full, provider 5xx."""


class PermanentError(TaskError):
    """Retrying cannot help: corrupt input, deleted VOD, bad request. The task fails now."""


class RateLimitedError(TaskError):
    """The provider asked us to wait (429 Retry-After, quota reset). Retried at `retry_at`
    without spending an attempt."""

    def __init__(self, reason: str, retry_at: datetime) -> None:
        super().__init__(reason)
        self.retry_at = retry_at


class CircuitOpenError(TaskError):
    """A circuit breaker for the task's provider/scope is open; the task waits until it may
    half-open, without spending an attempt."""

    def __init__(self, scope: str, retry_at: datetime) -> None:
        super().__init__(f"circuit open for {scope}")
        self.scope = scope
        self.retry_at = retry_at


class LeaseLost(TaskError):
    """This run no longer holds its task (its lease expired or another run took it over):
    whatever it was about to write is refused. Raised by the fencing checks in TaskContext;
    the worker records nothing for the run, the current holder owns the outcome."""

    def __init__(self, task_id: int, fence: int, action: str) -> None:
        super().__init__(f"task {task_id}: run {fence} lost its lease; refused to {action}")
        self.task_id = task_id
        self.fence = fence
        self.action = action
