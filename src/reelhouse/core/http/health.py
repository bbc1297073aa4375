"""Liveness and readiness, under every name the runbooks use."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from reelhouse.core.db.migrate import pending_revisions
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.circuit import OPEN

router = APIRouter(tags=["health"])


async def database_ok(request: Request) -> tuple[bool, str | None]:
    try:
        async with request.app.state.runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True, None
    except Exception as exc:  # any failure to reach the database means "not healthy"
        return False, type(exc).__name__


@router.get("/healthz", response_class=PlainTextResponse, summary="Liveness: database ping")
async def healthz(request: Request) -> PlainTextResponse:
    ok, _ = await database_ok(request)
    return PlainTextResponse("ok" if ok else "unhealthy", status_code=200 if ok else 503)


@router.get("/readyz", summary="Readiness: database, migrations, circuit breakers")
async def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    ok, error = await database_ok(request)
    if not ok:
        return _not_ready("database", error or "unreachable")
    pending = await pending_revisions(runtime.engine)
    if pending:
        return _not_ready("migrations", f"pending revisions: {', '.join(pending)}")
    open_scopes = [b.scope or "(global)" for b in await runtime.breaker.all_states() if b.state == OPEN]
    if open_scopes:
        return _not_ready("circuit_breaker", f"open for {', '.join(open_scopes)}")
    return JSONResponse({"status": "ready"})


def _not_ready(check: str, error: str) -> JSONResponse:
    return JSONResponse({"status": "not_ready", "failed_check": check, "error": error}, status_code=503)


@router.get("/health", summary="Health (LegacyVideo form)")
async def health(request: Request) -> JSONResponse:
    ok, _ = await database_ok(request)
    return JSONResponse({"status": "ok" if ok else "unhealthy", "timestamp": utcnow().isoformat()},
                        status_code=200 if ok else 503)


@router.get("/v1/health", summary="Health (WebEncode form)")
async def v1_health(request: Request) -> JSONResponse:
    ok, error = await database_ok(request)
    body = {"status": "ok" if ok else "unhealthy", "database": "ok" if ok else error,
            "timestamp": utcnow().isoformat()}
    return JSONResponse(body, status_code=200 if ok else 503)
