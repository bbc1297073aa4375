"""The core HTTP surface: health, auth on every mutation, JSON errors, correlation ids."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.security.http_auth import require_operator
from reelhouse.core.security.users import create_api_token, create_user
from tests.integration.http.conftest import ADMIN_TOKEN, admin_headers

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


async def test_healthz_and_friends(client):
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.text == "ok"
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and "timestamp" in health
    assert (await client.get("/v1/health")).json()["status"] == "ok"
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and "failed_check" not in ready
    # Missing credentials are said, without making the server unready (it can still encode).
    assert any("TWITCH_CLIENT_ID" in warning for warning in ready["warnings"])


async def test_healthz_reports_503_when_database_is_gone(client, runtime, tmp_path):
    from reelhouse.core.db.engine import create_engine

    await runtime.aclose()
    runtime.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    response = await client.get("/healthz")
    assert response.status_code == 503 and response.text == "unhealthy"
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failed_check"] == "database"


async def test_every_mutating_route_rejects_anonymous_callers(app, client):
    # The OpenAPI document is the route table: every route FastAPI serves is in it.
    mutations = [
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for method in ops
        if method.upper() in MUTATING
    ]
    assert len(mutations) >= 7  # the walk must actually cover the API
    for method, template in mutations:
        path = re.sub(r"\{[^}]+\}", "1", template)
        response = await client.request(method, path, json={})
        assert response.status_code in (401, 403), f"{method} {template} -> {response.status_code}"
        assert "error" in response.json()


async def test_roles_are_enforced(client, runtime):
    viewer_id = await create_user(runtime.engine, "viewer1", "correct horse battery", "viewer")
    viewer = await create_api_token(runtime.engine, viewer_id, "t")
    enq = await TaskQueue(runtime.engine).enqueue("noop")
    headers = {"Authorization": f"Bearer {viewer}"}
    assert (await client.get(f"/v1/jobs/{enq.job_id}", headers=headers)).status_code == 200
    forbidden = await client.post(f"/v1/jobs/{enq.job_id}/cancel", headers=headers)
    assert forbidden.status_code == 403 and "operator" in forbidden.json()["error"]
    allowed = await client.post(f"/v1/jobs/{enq.job_id}/cancel", headers=admin_headers())
    assert allowed.status_code == 200 and allowed.json()["status"] == "cancelled"
    bad = await client.get("/v1/jobs", headers={"Authorization": "Bearer rh_not-a-token"})
    assert bad.status_code == 401
    assert (await client.get("/v1/jobs", headers={"X-Admin-Token": ADMIN_TOKEN})).status_code == 200


async def test_login_issues_token_and_is_rate_limited(client, runtime):
    await create_user(runtime.engine, "alice", "correct horse battery", "operator")
    ok = await client.post("/auth/login", json={"username": "alice", "password": "correct horse battery"})
    assert ok.status_code == 200 and ok.json()["role"] == "operator"
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {ok.json()['token']}"})
    assert me.json()["name"] == "alice"
    statuses = [
        (await client.post("/auth/login", json={"username": "alice", "password": "wrong-password"})).status_code
        for _ in range(6)
    ]
    assert statuses[:4] == [401] * 4 and statuses[-1] == 429


async def test_errors_are_json_without_stack_traces(app, client):
    missing = await client.get("/v1/jobs/999999", headers=admin_headers())
    assert missing.status_code == 404 and missing.json()["error"] == "job 999999 not found"
    invalid = await client.get("/v1/jobs?limit=0", headers=admin_headers())
    assert invalid.status_code == 422 and "limit" in invalid.json()["error"]
    bad_status = await client.get("/v1/tasks?status=bogus", headers=admin_headers())
    assert bad_status.status_code == 400 and "bogus" in bad_status.json()["error"]
    unknown = await client.get("/no/such/path")
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_correlation_id_reaches_enqueued_task_and_its_logs(settings, runtime, caplog):
    """A request's X-Correlation-ID is returned, stored on the task it enqueues, and set while
    the worker runs that task."""
    import asyncio

    import httpx

    from reelhouse.app import create_app
    from reelhouse.core.jobs.registry import TaskKind
    from reelhouse.core.jobs.worker import Worker, WorkerOptions
    from reelhouse.core.telemetry.correlation import current_correlation_id
    from reelhouse.core.telemetry.logging import ContextFilter

    router = APIRouter()

    @router.post("/test/enqueue")
    async def enqueue(request: Request, _p=Depends(require_operator)) -> dict:
        return {"task_id": (await TaskQueue(request.app.state.runtime.engine).enqueue("echo")).task_id}

    seen = []

    async def echo(ctx):
        seen.append(current_correlation_id())
        logging.getLogger("reelhouse.task.echo").info("echo ran")

    runtime.routers.append(router)
    runtime.registry.register(TaskKind("echo", echo))
    app = create_app(settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/test/enqueue", headers={**admin_headers(), "X-Correlation-ID": "corr-abc-123"})
        generated = await client.get("/healthz")
    assert response.headers["X-Correlation-ID"] == "corr-abc-123"
    assert len(generated.headers["X-Correlation-ID"]) >= 16
    task_id = response.json()["task_id"]
    async with runtime.engine.connect() as conn:
        stored = (await conn.execute(select(tasks.c.correlation_id).where(tasks.c.id == task_id))).scalar_one()
    assert stored == "corr-abc-123"
    caplog.handler.addFilter(ContextFilter())
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05))
    runner = asyncio.create_task(worker.run())
    with caplog.at_level(logging.INFO, logger="reelhouse.task.echo"):
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.05)
        worker.request_stop()
        await runner
    assert seen == ["corr-abc-123"]
    assert [r.corr for r in caplog.records if r.getMessage() == "echo ran"] == ["corr-abc-123"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CORS_PERMISSIVE": "1"}, "*"),
        ({"ENV": "development"}, "*"),
        ({"ENV": "production"}, None),
        ({}, None),  # unlike vod-tender, an unset ENV is not development
        ({"ENV": "dev", "CORS_ALLOWED_ORIGINS": "https://ui.example"}, None),
        ({"CORS_PERMISSIVE": "0", "ENV": "dev"}, None),
    ],
)
async def test_cors_permissive_mode(monkeypatch, tmp_path, env, expected):
    monkeypatch.delenv("ENV", raising=False)
    monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
    monkeypatch.delenv("CORS_PERMISSIVE", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from reelhouse.app import create_app
    from reelhouse.config import Settings
    from reelhouse.core.runtime import build_runtime

    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    app = create_app(settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.options(
            "/v1/jobs", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
        )
    await runtime.aclose()
    assert response.headers.get("access-control-allow-origin") == expected
