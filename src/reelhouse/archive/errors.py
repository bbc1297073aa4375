"""Where the archive decides what a provider's failure means for a task (one place).

Twitch, YouTube and yt-dlp clients raise `core.providers.errors`; the composition root wraps
every archive task handler with `as_task_errors`, so a handler lets provider errors through
(or catches them for its own bookkeeping and re-raises) and the engine gets:

    RateLimited -> RateLimitedError (wait until retry_at, no attempt spent)
    Unavailable -> TransientError   (retry with backoff)
    Rejected    -> PermanentError   (fail now with the provider's reason)

Database failures pass through unchanged (the engine retries them) and are counted on the way
as `vod_db_errors_total{task}` (seed 001's DatabaseConnectionIssues alert).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from reelhouse.core.jobs.errors import PermanentError, RateLimitedError, TaskError, TransientError
from reelhouse.core.providers.errors import ProviderError, RateLimited, Rejected
from reelhouse.core.telemetry.metrics import counter

DB_ERRORS = counter(
    "vod_db_errors_total", "Database errors (driver-level: connection, lock, constraint) in archive tasks", ("task",)
)

T = TypeVar("T")


def task_error(exc: ProviderError) -> TaskError:
    reason = str(exc)
    if isinstance(exc, RateLimited):
        return RateLimitedError(reason, exc.retry_at)
    if isinstance(exc, Rejected):
        return PermanentError(reason)
    return TransientError(reason)


def as_task_errors(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @wraps(handler)
    async def run(*args: Any, **kwargs: Any) -> T:
        try:
            return await handler(*args, **kwargs)
        except ProviderError as exc:
            raise task_error(exc) from exc
        except DBAPIError:
            DB_ERRORS.labels(handler.__name__.removesuffix("_task")).inc()
            raise

    return run
