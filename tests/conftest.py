"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every engine test.

PostgreSQL tests use a fresh database per test on 127.0.0.1:5432 (override with
TEST_POSTGRES_URL). With `CI` set a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.migrate import run_migrations

pytest_plugins = ["tests.fakes.fixtures"]

POSTGRES_ADMIN_DSN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = bool(os.environ.get("CI"))


def _postgres_dsn(database: str) -> str:
    base, _, _ = POSTGRES_ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def create_postgres_database() -> str:
    name = f"rh_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request, tmp_path) -> AsyncIterator[str]:
    """A database URL, migrated, on each backend in turn."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        name = None
    else:
        name = await create_postgres_database()
        url = _postgres_dsn(name).replace("postgresql://", "postgresql+asyncpg://")
    engine = create_engine(url)
    await run_migrations(engine)
    await engine.dispose()
    yield url
    if name:
        await drop_postgres_database(name)


@pytest.fixture
async def engine(db_url):
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()
