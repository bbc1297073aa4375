"""What anonymous callers see: no paths, hostnames or pids; /metrics and /status from values
refreshed in the background (no query per scrape); REQUIRE_AUTH_FOR_READS closes them."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx
from sqlalchemy import event

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.db.models import workers
from reelhouse.core.db.types import utcnow
from reelhouse.core.runtime import build_runtime
from reelhouse.core.security.users import create_api_token, create_user

from .conftest import admin


async def _add_worker(engine) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            workers.insert().values(
                id=f"{socket.gethostname()}-{os.getpid()}",
                hostname=socket.gethostname(),
                pid=os.getpid(),
                capabilities=["libx264"],
                kinds=["encode.transcode"],
                current_task_ids=[],
                status="running",
                started_at=now,
                last_heartbeat=now,
            )
        )


async def test_anonymous_reads_show_no_hostnames_pids_or_paths(client, runtime, settings):
    await _add_worker(runtime.engine)
    anonymous = (await client.get("/v1/workers")).json()
    assert len(anonymous) == 1 and anonymous[0]["hostname"] is None and anonymous[0]["pid"] is None
    assert socket.gethostname() not in str(anonymous) and str(os.getpid()) not in anonymous[0]["id"]
    assert anonymous[0]["capabilities"] == ["libx264"] and anonymous[0]["healthy"] is True
    signed_in = (await client.get("/v1/workers", headers=admin())).json()
    assert signed_in[0]["hostname"] == socket.gethostname() and signed_in[0]["pid"] == os.getpid()
    for path in ("/status", "/metrics", "/v1/workers", "/healthz", "/readyz", "/health", "/v1/health"):
        text = (await client.get(path)).text
        assert str(settings.server.data_dir.resolve()) not in text, path
        assert f"-{os.getpid()}" not in text, path


async def _run_with_interval(db_url, tmp_path, monkeypatch, interval: str, reads: int):
    """Start the app's lifespan with METRICS_REFRESH_INTERVAL=interval; after the first
    background refresh, make `reads` scrapes of /metrics and /status and wait for two more
    refreshes when the interval is short. Returns (statements run by the reads, cache)."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METRICS_REFRESH_INTERVAL", interval)
    settings = Settings()
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime, background=False)
    statements: list[str] = []
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    cache = app.state.status_cache
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        async with asyncio.timeout(30):
            while cache.refreshes < 1:
                await asyncio.sleep(0.05)
        statements.clear()
        for _ in range(reads):
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/status")).status_code == 200
        during_reads = list(statements)
        if reads == 0:
            async with asyncio.timeout(30):
                while cache.refreshes < 3:
                    await asyncio.sleep(0.05)
    await runtime.aclose()
    return during_reads, cache


async def test_scrapes_read_cached_values_without_queries(db_url, tmp_path, monkeypatch):
    during_reads, cache = await _run_with_interval(db_url, tmp_path, monkeypatch, "10m", reads=25)
    assert during_reads == [], f"50 reads ran {len(during_reads)} statements"
    assert cache.refreshes == 1


async def test_the_values_are_refreshed_in_the_background(db_url, tmp_path, monkeypatch):
    _, cache = await _run_with_interval(db_url, tmp_path, monkeypatch, "1s", reads=0)
    assert cache.refreshes >= 3, "refreshed with no reader at all"


async def test_reads_can_require_credentials(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REQUIRE_AUTH_FOR_READS", "true")
    settings = Settings()
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime, background=False)
    user_id = await create_user(runtime.engine, "scraper", "correct horse battery", "viewer")
    token = await create_api_token(runtime.engine, user_id, "prometheus")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/status", "/metrics", "/v1/workers", "/vods", "/vods/1/progress", "/vods/1/chat"):
            assert (await client.get(path)).status_code == 401, path
            signed_in = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert signed_in.status_code in (200, 404), path  # VOD 1 does not exist: 404 once past auth
        assert (await client.get("/healthz")).status_code == 200, "liveness stays open"
    await runtime.aclose()


async def test_interval_zero_reads_fresh_values(client, runtime):
    """Tests (and debugging) run with METRICS_REFRESH_INTERVAL=0: every read recomputes."""
    await runtime.breaker.record_failure("chan_x")
    assert 'vod_circuit_open{channel="chan_x"} 0.0' in (await client.get("/metrics")).text
    await runtime.breaker.record_success("chan_x")
    assert (await client.get("/status")).json()["circuit_failures"] == 0
