"""WebEncode's system routes: job events (SSE), `/v1/system/health`, `/v1/system/stats` and the
audit log (`/v1/audit`, from core's audit chain)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, text

from reelhouse import __version__
from reelhouse.core.db.models import audit_log, jobs
from reelhouse.core.http.deps import Admin, DbId, RuntimeDep, Viewer, component
from reelhouse.core.http.errors import event_stream_doc
from reelhouse.core.jobs.workers_table import list_workers
from reelhouse.core.runtime import Runtime
from reelhouse.encode.service import JOB_KIND
from reelhouse.encode.services import EncodeServices

router = APIRouter(tags=["system"])
Services = Annotated[EncodeServices, component(EncodeServices)]
HEARTBEAT_SECONDS = 15.0
CHECK_TIMEOUT = 5.0
SSE_DOC: dict[int | str, dict[str, Any]] = {200: event_stream_doc("an open event stream")}


class HealthView(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str = Field(description="healthy | degraded | unhealthy")
    version: str
    services: dict[str, str] = Field(description="database, nats, storage: healthy | unhealthy | not_configured")
    errors: dict[str, str] = Field(description="for each unhealthy service, what failed")


class StatsView(BaseModel):
    model_config = ConfigDict(extra="allow")

    jobs: dict[str, int]
    workers: dict[str, int]
    streams: dict[str, int]
    system: dict[str, Any]


class AuditView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    user_id: str | None
    action: str
    resource_type: str
    resource_id: str | None
    details: Any
    ip_address: str | None = None
    user_agent: str | None = None
    created_at: str


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(services: EncodeServices, request: Request, job_id: int | None) -> AsyncIterator[bytes]:
    async with services.events.subscribe() as queue:
        yield _sse({"status": "connected"}, "connected")
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if "job_id" not in event or (job_id is not None and event["job_id"] != str(job_id)):
                continue
            yield _sse(event)


def _event_response(services: EncodeServices, request: Request, job_id: int | None) -> StreamingResponse:
    return StreamingResponse(
        _stream(services, request, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/events/jobs", responses=SSE_DOC, summary="Server-Sent Events for every encode job")
async def job_events(request: Request, services: Services, _p: Viewer) -> StreamingResponse:
    return _event_response(services, request, None)


@router.get("/v1/events/jobs/{job_id}", responses=SSE_DOC, summary="Server-Sent Events for one job")
async def job_detail_events(job_id: DbId, request: Request, services: Services, _p: Viewer) -> StreamingResponse:
    return _event_response(services, request, job_id)


async def _check_database(runtime: Runtime) -> None:
    async with runtime.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_nats(url: str) -> None:
    import nats

    client = await nats.connect(url, connect_timeout=CHECK_TIMEOUT, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        await client.jetstream().account_info()
    finally:
        await client.close()


async def _check_storage(services: EncodeServices) -> None:
    storage = services.service.storage()
    async with contextlib.aclosing(storage.list(services.service.settings.output_prefix + "/")) as listing:
        async for _ in listing:
            break


@router.get("/v1/system/health", response_model=HealthView, summary="Database, NATS and storage, each checked")
async def system_health(runtime: RuntimeDep, services: Services, _p: Viewer) -> dict[str, Any]:
    nats_url = runtime.settings.jobs.nats_url
    checks: dict[str, Any] = {
        "database": _check_database(runtime),
        "storage": _check_storage(services),
    }
    if nats_url:
        checks["nats"] = _check_nats(nats_url)
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(c, CHECK_TIMEOUT * 2) for c in checks.values()), return_exceptions=True
    )
    state = {"nats": "not_configured"}
    problems: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            state[name] = "unhealthy"
            problems[name] = f"{type(result).__name__}: {str(result)[:200]}".rstrip(": ")
        else:
            state[name] = "healthy"
    overall = "healthy" if not problems else ("unhealthy" if "database" in problems else "degraded")
    return {"status": overall, "version": __version__, "services": state, "errors": problems}


@router.get("/v1/system/stats", response_model=StatsView, summary="Job, worker and stream counts")
async def system_stats(runtime: RuntimeDep, _p: Viewer) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        by_status: dict[str, int] = dict(
            (
                await conn.execute(
                    select(jobs.c.status, func.count()).where(jobs.c.kind == JOB_KIND).group_by(jobs.c.status)
                )
            ).all()
        )
    workers = await list_workers(runtime.engine, runtime.settings.jobs.worker_stale_after)
    counts = {s: int(by_status.get(s, 0)) for s in ("queued", "processing", "completed", "failed", "cancelled", "dead")}
    return {
        "jobs": {"total": sum(int(v) for v in by_status.values()), **counts},
        "workers": {"total": len(workers), "healthy": len([w for w in workers if w["healthy"]])},
        "streams": {"total": 0, "live": 0},
        "system": {"python_version": platform.python_version(), "version": __version__},
    }


def _audit_row(row: Any) -> dict[str, Any]:
    target = row["target"] or ""
    kind, _, ident = target.partition(":")
    return {
        "id": str(row["id"]),
        "user_id": row["actor"],
        "action": row["action"],
        "resource_type": kind or "system",
        "resource_id": ident or None,
        "details": row["details"],
        "ip_address": None,
        "user_agent": None,
        "created_at": row["at"].isoformat(),
    }


@router.get("/v1/audit", response_model=list[AuditView], summary="The audit log, newest first (admin)")
async def list_audit(
    runtime: RuntimeDep,
    _p: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    async with runtime.engine.connect() as conn:
        rows = (
            (await conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)))
            .mappings()
            .all()
        )
    return [_audit_row(r) for r in rows]
