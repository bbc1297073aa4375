"""Which errors mean "the database is unreachable right now" (waited out by a running task's
lease checks and fenced writes), and the wait itself. The restart end to end is in
tests/integration/encode/test_encode_at_scale.py."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from reelhouse.core.db.engine import database_unavailable, waiting_out_outages


def wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", None, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        wrapped(Exception("connection is closed"), invalidated=True),
        wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
    ],
)
def test_unreachable_database_errors_are_recognised(exc: BaseException) -> None:
    assert database_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", None, Exception("duplicate key value violates unique constraint")),
        wrapped(asyncpg.UndefinedTableError('relation "tasks" does not exist')),
        ValueError("bad payload"),
    ],
)
def test_statement_errors_are_not_outages(exc: BaseException) -> None:
    assert not database_unavailable(exc)


async def test_an_outage_is_waited_out_and_anything_else_raised_at_once() -> None:
    calls: list[int] = []

    async def comes_back() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise wrapped(asyncpg.CannotConnectNowError("the database system is starting up"))
        return "answered"

    assert await waiting_out_outages(comes_back, wait=10) == "answered"
    assert len(calls) == 3

    async def wrong() -> None:
        calls.append(1)
        raise wrapped(asyncpg.UndefinedTableError('relation "tasks" does not exist'))

    calls.clear()
    with pytest.raises(DBAPIError):
        await waiting_out_outages(wrong, wait=10)
    assert len(calls) == 1

    async def never_back() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    with pytest.raises(ConnectionRefusedError):
        await waiting_out_outages(never_back, wait=0.5)
