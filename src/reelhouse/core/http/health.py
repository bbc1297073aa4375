"""Liveness and readiness, under every name the runbooks use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from reelhouse.core.db.migrate import pending_revisions
from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import RuntimeDep
from reelhouse.core.jobs.circuit import OPEN
from reelhouse.core.runtime import Runtime

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str = Field(description="ready | not_ready")
    failed_check: str | None = Field(None, description="database | migrations | circuit_breaker")
    error: str | None = None
    warnings: list[str] = Field(
        default_factory=list, description="what is not configured (ready all the same), e.g. missing credentials"
    )


class Health(BaseModel):
    status: str = Field(description="ok | unhealthy")
    timestamp: str


class V1Health(Health):
    database: str | None = Field(description="ok, or the error class")


_UNHEALTHY: dict[int | str, dict[str, Any]] = {503: {"description": "the database cannot be reached"}}


async def database_ok(runtime: Runtime) -> tuple[bool, str | None]:
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True, None
    except Exception as exc:  # any failure to reach the database means "not healthy"
        return False, type(exc).__name__


@router.get(
    "/healthz",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string", "enum": ["ok"]}}}}, **_UNHEALTHY},
    summary="Liveness: database ping (`ok`)",
)
async def healthz(runtime: RuntimeDep) -> PlainTextResponse:
    ok, _ = await database_ok(runtime)
    return PlainTextResponse("ok" if ok else "unhealthy", status_code=200 if ok else 503)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: failed_check says which check failed"}},
    summary="Readiness: database, migrations, circuit breakers",
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    ok, error = await database_ok(runtime)
    if not ok:
        return _not_ready("database", error or "unreachable")
    pending = await pending_revisions(runtime.engine)
    if pending:
        return _not_ready("migrations", f"pending revisions: {', '.join(pending)}")
    open_scopes = [b.scope or "(global)" for b in await runtime.breaker.all_states() if b.state == OPEN]
    if open_scopes:
        return _not_ready("circuit_breaker", f"open for {', '.join(open_scopes)}")
    return JSONResponse(Readiness(status="ready", warnings=runtime.notes).model_dump(exclude_none=True))


def _not_ready(check: str, error: str) -> JSONResponse:
    body = Readiness(status="not_ready", failed_check=check, error=error)
    return JSONResponse(body.model_dump(exclude_none=True, exclude={"warnings"}), status_code=503)


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, **_UNHEALTHY[503]}},
    summary="Health (LegacyVideo form)",
)
async def health(runtime: RuntimeDep) -> JSONResponse:
    ok, _ = await database_ok(runtime)
    body = Health(status="ok" if ok else "unhealthy", timestamp=utcnow().isoformat())
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/v1/health",
    response_model=V1Health,
    responses={503: {"model": V1Health, **_UNHEALTHY[503]}},
    summary="Health (WebEncode form)",
)
async def v1_health(runtime: RuntimeDep) -> JSONResponse:
    ok, error = await database_ok(runtime)
    body = V1Health(status="ok" if ok else "unhealthy", database="ok" if ok else error, timestamp=utcnow().isoformat())
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
