"""The database's clock, as SQL expressions: the one clock every worker shares.

Leases, heartbeats, `run_after`, reaping and periodic scheduling compare against the time of
the database server, never a worker's own clock, so a host whose clock is minutes off neither
loses its leases nor reclaims someone else's. On PostgreSQL that is `now()`; on SQLite it is
`strftime(...)` in the text format `UtcDateTime` stores (fixed width, microseconds), which
keeps string order equal to time order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from reelhouse.core.db.types import UtcDateTime

SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"  # %f is SS.SSS; three zeros make SQLAlchemy's .ffffff


def sqlite_shift(seconds: float) -> str:
    """An SQLite date modifier moving 'now' by `seconds`."""
    return f"{seconds:+.6f} seconds"


class db_now(FunctionElement[datetime]):
    """The database's current time, optionally shifted by a number of seconds (a bound value)."""

    type = UtcDateTime()
    inherit_cache = True
    name = "db_now"

    def __init__(self, shift: timedelta | float | ColumnElement[Any] | None = None) -> None:
        if isinstance(shift, timedelta):
            shift = shift.total_seconds()
        if shift is None:
            super().__init__()
        elif isinstance(shift, ColumnElement):
            super().__init__(shift)
        else:
            super().__init__(bindparam("db_now_shift", float(shift), unique=True))


@compiles(db_now, "postgresql")
def _now_postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    clauses = list(element.clauses)
    if not clauses:
        return "now()"
    return f"(now() + make_interval(secs => {compiler.process(clauses[0], **kw)}))"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    clauses = list(element.clauses)
    if not clauses:
        return f"strftime('{SQLITE_FORMAT}', 'now')"
    shift = compiler.process(clauses[0], **kw)
    return f"strftime('{SQLITE_FORMAT}', 'now', printf('%+.6f seconds', {shift}))"


async def database_time(db: AsyncEngine | AsyncConnection) -> datetime:
    """What time the database thinks it is (for decisions made in Python, e.g. which period
    a scheduler is in, or whether a breaker's cooldown is over)."""
    query = select(db_now())
    if isinstance(db, AsyncConnection):
        return (await db.execute(query)).scalar_one()
    async with db.connect() as conn:
        return (await conn.execute(query)).scalar_one()
