"""Correlation ids: one id follows a request into the jobs it enqueues and into their logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from asgi_correlation_id import correlation_id as asgi_correlation_id

_correlation_id: ContextVar[str | None] = ContextVar("reelhouse_correlation_id", default=None)


def current_correlation_id() -> str | None:
    """The id of the request or task being handled, if any.

    Inside an HTTP request the id set by asgi-correlation-id's middleware wins."""
    return _correlation_id.get() or asgi_correlation_id.get()


def new_correlation_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def correlation_scope(value: str | None) -> Iterator[str]:
    token = _correlation_id.set(value or new_correlation_id())
    try:
        yield _correlation_id.get() or ""
    finally:
        _correlation_id.reset(token)
