"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every engine test.

PostgreSQL tests use a fresh database per test (copied from one migrated per process) on 127.0.0.1:5432 (override with
TEST_POSTGRES_URL). With `CI` set a missing server is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.migrate import run_migrations

pytest_plugins = ["tests.fakes.fixtures", "tests.seaweed", "tests.pg_cluster"]

# Tests read /metrics and /status right after changing state; production serves values refreshed
# every METRICS_REFRESH_INTERVAL (tests/integration/security/test_exposure.py covers that).
os.environ.setdefault("METRICS_REFRESH_INTERVAL", "0")
# Apps started by other tests do not run the RTMP ingest (nginx); tests/integration/live turns it on.
os.environ.setdefault("LIVE_ENABLED", "false")

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


_templates: dict[str, str] = {}
_drops: list[Future[None]] = []
_dropper: ThreadPoolExecutor | None = None


async def _template(backend: str, root: Path) -> str:
    """A migrated database to copy, made once per test process per backend: migrating for every
    test cost more than most tests themselves (Alembic loads every revision file each time)."""
    if backend not in _templates:
        if backend == "sqlite":
            path = root / "template.db"
            url = f"sqlite+aiosqlite:///{path}"
        else:
            name = await create_postgres_database()
            url = _postgres_dsn(name).replace("postgresql://", "postgresql+asyncpg://")
        engine = create_engine(url)
        await run_migrations(engine)
        await engine.dispose()
        _templates[backend] = str(path) if backend == "sqlite" else name
    return _templates[backend]


async def migrated_sqlite(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`target`: a new SQLite database file at the latest revision (a copy of the template)."""
    template = await _template("sqlite", tmp_path_factory.getbasetemp())
    shutil.copyfile(template, target)
    if os.path.exists(f"{template}-wal"):
        shutil.copyfile(f"{template}-wal", f"{target}-wal")
    return target


def _drop_later(name: str) -> None:
    """DROP DATABASE waits for a checkpoint (seconds on a busy disk) and nothing needs the
    database after its test: drop it on a side thread while the next test runs."""
    global _dropper
    if _dropper is None:
        _dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")
    _drops.append(_dropper.submit(asyncio.run, drop_postgres_database(name)))


@pytest.fixture(scope="session", autouse=True)
def _postgres_cleanup() -> Iterator[None]:
    yield
    if "postgres" in _templates:
        _drop_later(_templates.pop("postgres"))
    for drop in _drops:
        drop.result()  # a failed drop still fails the session
    if _dropper is not None:
        _dropper.shutdown()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request, tmp_path, tmp_path_factory) -> AsyncIterator[str]:
    """A database URL, migrated, on each backend in turn (a fresh copy of a migrated template)."""
    if request.param == "sqlite":
        target = await migrated_sqlite(tmp_path / "test.db", tmp_path_factory)
        yield f"sqlite+aiosqlite:///{target}"
        return
    template = await _template("postgres", tmp_path_factory.getbasetemp())
    name = f"rh_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    yield _postgres_dsn(name).replace("postgresql://", "postgresql+asyncpg://")
    _drop_later(name)


@pytest.fixture
async def engine(db_url):
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
