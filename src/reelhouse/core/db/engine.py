"""Async engine creation with the per-backend settings the job engine relies on."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from reelhouse.core.telemetry import metrics

# Execution option read by the SQLite "begin" hook: the claim transaction must take the write
# lock up front (BEGIN IMMEDIATE) so two claimers never read the same candidate rows.
SQLITE_BEGIN = "reelhouse_sqlite_begin"


def is_sqlite(engine: AsyncEngine | AsyncConnection | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    # No pool_pre_ping: it costs a round trip per checkout on the hot path; a connection broken
    # by a database restart fails one statement, is invalidated, and the loops retry.
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    _track_pool(engine)
    return engine


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached right now (restarting, crashed, the
    connection cut) rather than that the statement was wrong: what is worth waiting out."""
    import asyncpg

    gone = (
        OSError,  # refused while the server is down, reset when it goes
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,  # "connection is closed": a pooled connection the restart killed
        asyncpg.CannotConnectNowError,  # "the database system is starting up"
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
    )
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, gone):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


T = TypeVar("T")
# How long a run's fenced statements wait for the database to come back before they fail.
OUTAGE_WAIT_SECONDS = 30.0


async def waiting_out_outages(step: Callable[[], Awaitable[T]], *, wait: float = OUTAGE_WAIT_SECONDS) -> T:
    """`step()`, retried with backoff while the database is unreachable, for up to `wait`
    seconds. For statements a running task cannot do without (the lease check before a side
    effect, a fenced write): without it a restart of PostgreSQL fails the task (an attempt
    spent, the work redone) for an outage of a second. Only unreachability is retried, so use
    it for steps that write nothing (a read, the locks a fenced transaction starts with): a
    lost COMMIT reply must not be repeated blindly."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return await step()
        except Exception as exc:
            if not database_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


# The engines of this process with a live pool, for the pool gauges
# (`database_connection_pool_*`): a disposed engine stops counting until it connects again.
_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def _track_pool(engine: AsyncEngine) -> None:
    sync = engine.sync_engine
    _ENGINES.add(sync)

    @event.listens_for(sync, "engine_disposed")
    def _disposed(_conn: Any) -> None:
        _ENGINES.discard(sync)

    @event.listens_for(sync, "connect")
    def _connected(_dbapi: Any, _record: Any) -> None:
        _ENGINES.add(sync)


def pool_capacity(pool: Any) -> int:
    """Connections `pool` may have open at once: pool_size + max_overflow for a queue pool
    (SQLAlchemy's default for PostgreSQL and SQLite files), 1 for a single-connection pool."""
    size = getattr(pool, "size", None)
    if not callable(size):
        return 1
    overflow = getattr(pool, "_max_overflow", 0)
    return int(size()) + max(int(overflow), 0)


def pool_in_use(pool: Any) -> int:
    checkedout = getattr(pool, "checkedout", None)
    return int(checkedout()) if callable(checkedout) else 0


def _pools() -> list[Any]:
    return [engine.pool for engine in list(_ENGINES)]


metrics.DB_POOL_SIZE.set_function(lambda: float(sum(pool_capacity(p) for p in _pools())))
metrics.DB_POOL_IN_USE.set_function(lambda: float(sum(pool_in_use(p) for p in _pools())))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so "begin" below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


async def write_connection(engine: AsyncEngine) -> AsyncConnection:
    """A connection whose transactions start as writers (BEGIN IMMEDIATE on SQLite).

    Use for read-then-write sequences that must not interleave (claims, audit appends)."""
    conn = await engine.connect()
    if is_sqlite(engine):
        conn = await conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return conn


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A writer transaction on a connection of its own (`write_connection`), committed when
    the block ends, rolled back if it raises: the stores' read-then-write sequences."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            yield conn
    finally:
        await conn.close()
