"""The seeds' metrics reelhouse lacked: `database_connection_pool_size` and `_in_use` follow
the live pools, `vod_db_errors_total` counts database errors at the archive's task boundary."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from reelhouse.archive.errors import as_task_errors
from reelhouse.core.db.engine import create_engine


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_pool_gauges_follow_checkouts(db_url):
    size_before, in_use_before = value("database_connection_pool_size"), value("database_connection_pool_in_use")
    engine = create_engine(db_url, pool_size=3)
    try:
        # PostgreSQL: pool_size + max_overflow (= pool_size); SQLite files: SQLAlchemy's 5 + 10.
        capacity = 6 if db_url.startswith("postgresql") else 15
        assert value("database_connection_pool_size") == size_before + capacity
        held = [await engine.connect() for _ in range(3)]
        for conn in held:
            await conn.execute(text("SELECT 1"))
        assert value("database_connection_pool_in_use") == in_use_before + 3
        for conn in held:
            await conn.close()
        assert value("database_connection_pool_in_use") == in_use_before
    finally:
        await engine.dispose()
    assert value("database_connection_pool_size") == size_before  # a disposed pool stops counting
    async with engine.connect():  # ... until it is used again
        assert value("database_connection_pool_in_use") == in_use_before + 1
    assert value("database_connection_pool_size") == size_before + capacity
    await engine.dispose()


async def test_database_errors_of_archive_tasks_are_counted_and_passed_on(engine):
    async def download_task(services, ctx) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT missing_column FROM vods"))

    async def upload_task(services, ctx) -> None:
        await asyncio.sleep(0)

    before = value("vod_db_errors_total", task="download")
    with pytest.raises(DBAPIError):  # the engine's retry policy decides, not the counter
        await as_task_errors(download_task)(None, None)
    await as_task_errors(upload_task)(None, None)
    assert value("vod_db_errors_total", task="download") == before + 1
    assert value("vod_db_errors_total", task="upload") == 0


async def test_http_request_duration_is_recorded_by_route_template(db_url, tmp_path, monkeypatch):
    """The seeds' `http_request_duration_seconds` is `reelhouse_http_request_duration_seconds`,
    labelled by route template (bounded), with the request counter next to it."""
    import httpx

    from reelhouse.app import create_app
    from reelhouse.config import Settings
    from reelhouse.core.runtime import build_runtime

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    app = create_app(settings, runtime=runtime, background=False)
    route = "/v1/jobs/{job_id}"
    before = value("reelhouse_http_request_duration_seconds_count", route=route)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        status = str((await client.get("/v1/jobs/987654")).status_code)
        before_status = value("reelhouse_http_requests_total", route=route, method="GET", status=status)
        assert status == str((await client.get("/v1/jobs/987655")).status_code)
    await runtime.aclose()
    assert value("reelhouse_http_request_duration_seconds_count", route=route) == before + 2
    assert value("reelhouse_http_request_duration_seconds_sum", route=route) > 0
    assert value("reelhouse_http_requests_total", route=route, method="GET", status=status) == before_status + 1
    assert (
        REGISTRY.get_sample_value("reelhouse_http_request_duration_seconds_count", {"route": "/v1/jobs/987654"}) is None
    )
