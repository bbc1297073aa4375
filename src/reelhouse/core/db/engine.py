"""Async engine creation with the per-backend settings the job engine relies on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
    return engine


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
