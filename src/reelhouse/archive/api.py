"""VOD endpoints with vod-tender's paths and JSON field names, and the archive `register` hook.

Compatibility choices: `GET /vods` still answers a bare JSON array (vod-tender's shape); the
keyset cursor for the next page travels in `X-Next-Cursor` and a `Link: <...>; rel="next"`
header. `id` in every VOD body is the Twitch VOD id, as in vod-tender. Reads are anonymous
(vod-tender served them publicly); every mutation needs an operator.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive import pipeline
from reelhouse.archive.models import vods
from reelhouse.core.db.models import tasks
from reelhouse.core.db.types import UtcDateTime, utcnow
from reelhouse.core.jobs import control, states
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import require_operator
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["vods"])
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
MAX_DESCRIPTION = 4000  # YouTube allows 5000 bytes; the attribution lines need the rest
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")


def engine_of(request: Request) -> AsyncEngine:
    return request.app.state.runtime.engine


def rfc3339(value: datetime | None) -> str | None:
    """Go's time.Time JSON form, which vod-tender clients parse: `2024-05-01T12:00:00Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "invalid JSON body") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "expected a JSON object")
    return body


async def find_vod(engine: AsyncEngine, vod_id: str):
    async with engine.connect() as conn:
        row = (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()
    if row is None:
        raise HTTPException(404, f"vod {vod_id} not found")
    return row


# ---- listing with a keyset cursor -------------------------------------------------------------

# Placeholder rows (live chat before the VOD exists) may lack a date; created_at stands in so
# every row has a sort key and the cursor comparison stays total.
_SORT_DATE = func.coalesce(vods.c.date, vods.c.created_at, type_=UtcDateTime)


def encode_cursor(sort_date: datetime, row_id: int) -> str:
    raw = json.dumps([sort_date.astimezone(UTC).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, row_id = json.loads(raw)
        parsed = datetime.fromisoformat(when)
        if parsed.tzinfo is None or not isinstance(row_id, int):
            raise ValueError
        return parsed, row_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(400, "invalid cursor; pass the X-Next-Cursor value of the previous page") from None


def list_item(row: Any) -> dict[str, Any]:
    return {"id": row.twitch_vod_id, "title": row.title, "date": rfc3339(row.date),
            "processed": bool(row.processed), "youtube_url": row.youtube_url, "channel": row.channel}


@router.get("/vods", summary="VODs, newest first; next page cursor in X-Next-Cursor / Link")
async def list_vods(request: Request, response: Response, channel: str | None = None,
                    limit: int = Query(DEFAULT_LIMIT), cursor: str | None = None,
                    offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    # vod-tender answered out-of-range limits with its default instead of an error; kept.
    if limit <= 0 or limit > MAX_LIMIT:
        limit = DEFAULT_LIMIT
    query = select(vods, _SORT_DATE.label("sort_date")).order_by(_SORT_DATE.desc(), vods.c.id.desc())
    if channel:
        query = query.where(vods.c.channel == channel.lower())
    if cursor:
        after_date, after_id = decode_cursor(cursor)
        query = query.where(or_(_SORT_DATE < after_date, and_(_SORT_DATE == after_date, vods.c.id < after_id)))
    elif offset:
        query = query.offset(offset)  # vod-tender's offset pagination, for old clients
    async with engine_of(request).connect() as conn:
        rows = (await conn.execute(query.limit(limit + 1))).all()
    page = rows[:limit]
    if len(rows) > limit:
        token = encode_cursor(page[-1].sort_date, page[-1].id)
        params = {"limit": limit, "cursor": token, **({"channel": channel} if channel else {})}
        response.headers["X-Next-Cursor"] = token
        response.headers["Link"] = f'</vods?{urlencode(params)}>; rel="next"'
    return [list_item(row) for row in page]


# ---- one VOD -----------------------------------------------------------------------------------

@router.get("/vods/{vod_id}", summary="One VOD (id = Twitch VOD id)")
async def get_vod(request: Request, vod_id: str) -> dict[str, Any]:
    row = await find_vod(engine_of(request), vod_id)
    return {
        **list_item(row),
        "duration_seconds": row.duration_seconds,
        "downloaded_path": row.downloaded_path,
        "download_state": row.download_state,
        "download_retries": row.download_retries,
        "download_total": row.download_total,
        "progress_updated_at": rfc3339(row.progress_updated_at),
        "description": row.description or "",
        "processing_error": row.processing_error,
        "priority": row.priority,
        "skip_upload": bool(row.skip_upload),
        "job_id": row.job_id,
    }


def progress_percent(row: Any) -> float:
    """vod-tender's rule: bytes over total when known, else a percentage in a raw yt-dlp state
    line, else 100 once processed/complete, else 0 — always within 0..100."""
    if row.download_total and row.download_total > 0:
        return round(max(0.0, min(100.0, 100.0 * (row.download_bytes or 0) / row.download_total)), 2)
    if row.processed or row.download_state == "complete":
        return 100.0
    match = _PERCENT.search(row.download_state or "")
    if match:
        return max(0.0, min(100.0, float(match.group(1))))
    return 0.0


@router.get("/vods/{vod_id}/progress", summary="Download/processing progress of one VOD")
async def vod_progress(request: Request, vod_id: str) -> dict[str, Any]:
    row = await find_vod(engine_of(request), vod_id)
    return {
        "vod_id": row.twitch_vod_id,
        "state": row.download_state,
        "percent": progress_percent(row),
        "retries": row.download_retries,
        "total_bytes": row.download_total,
        "downloaded_path": row.downloaded_path,
        "processed": bool(row.processed),
        "processing_error": row.processing_error,
        "youtube_url": row.youtube_url,
        "progress_updated_at": rfc3339(row.progress_updated_at),
        "bytes": row.download_bytes,
        "speed": row.download_speed,
        "eta": row.download_eta_seconds,
    }


async def open_task_statuses(engine: AsyncEngine, job_id: int | None) -> set[str]:
    if job_id is None:
        return set()
    async with engine.connect() as conn:
        return set((await conn.execute(select(tasks.c.status).where(
            tasks.c.job_id == job_id, tasks.c.status.in_((states.QUEUED, states.RUNNING))))).scalars())


@router.post("/vods/{vod_id}/reprocess", status_code=204,
             summary="Reset a VOD's processing state and enqueue a fresh job (operator)")
async def reprocess_vod(request: Request, vod_id: str,
                        principal: Principal = Depends(require_operator)) -> Response:
    engine = engine_of(request)
    row = await find_vod(engine, vod_id)
    if row.is_placeholder:
        raise HTTPException(409, f"vod {vod_id} is a live-chat placeholder; there is no archive to process yet")
    if states.RUNNING in await open_task_statuses(engine, row.job_id):
        raise HTTPException(409, f"vod {vod_id} is being processed (job {row.job_id}); "
                                 f"POST /vods/{vod_id}/cancel first")
    if row.job_id is not None:
        await control.cancel_job(engine, row.job_id)  # a still-queued old job is superseded
    async with engine.begin() as conn:
        # Booleans are written as booleans: vod-tender's `processed=0` fails on PostgreSQL (§12.20).
        await conn.execute(update(vods).where(vods.c.twitch_vod_id == vod_id).values(
            processed=False, processing_error=None, youtube_url=None, youtube_upload_uri=None,
            uploaded_at=None, downloaded_path=None, download_state=None, download_retries=0,
            download_bytes=0, download_total=0, download_speed=None, download_eta_seconds=None,
            progress_updated_at=None, updated_at=utcnow()))
    job_id = await pipeline.enqueue_vod(engine, vod_id, reprocess=True)
    await audit(engine, principal.name, "vod.reprocess", f"vod:{vod_id}", {"job_id": job_id})
    # 204 like vod-tender; the new job is named in headers for clients that want to follow it.
    return Response(status_code=204, headers={"X-Job-Id": str(job_id), "Location": f"/v1/jobs/{job_id}"})


@router.post("/vods/{vod_id}/cancel", summary="Cancel a VOD's job: 202 if work was stopped, else 204 (operator)",
             responses={202: {"description": "work was queued or running and is being cancelled"},
                        204: {"description": "nothing was running"}})
async def cancel_vod(request: Request, vod_id: str, principal: Principal = Depends(require_operator)) -> Response:
    engine = engine_of(request)
    row = await find_vod(engine, vod_id)
    outcome = await control.cancel_job(engine, row.job_id) if row.job_id is not None else []
    if not outcome:
        return Response(status_code=204)
    await audit(engine, principal.name, "vod.cancel", f"vod:{vod_id}", {"job_id": row.job_id})
    body = {"status": "cancelling", "vod_id": vod_id, "job_id": row.job_id,
            "tasks": [{"task_id": task_id, "status": status} for task_id, status in outcome]}
    return Response(json.dumps(body), status_code=202, media_type="application/json")


# ---- description ------------------------------------------------------------------------------

@router.get("/vods/{vod_id}/description", summary="Custom YouTube description of a VOD")
async def get_description(request: Request, vod_id: str) -> dict[str, Any]:
    row = await find_vod(engine_of(request), vod_id)
    return {"vod_id": row.twitch_vod_id, "description": row.description or ""}


async def _set_description(request: Request, vod_id: str, principal: Principal) -> Response:
    engine = engine_of(request)
    await find_vod(engine, vod_id)
    body = await json_object(request)
    text = body.get("description")
    if not isinstance(text, str):
        raise HTTPException(400, "description must be a string")
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise HTTPException(400, f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION}")
    async with engine.begin() as conn:
        await conn.execute(update(vods).where(vods.c.twitch_vod_id == vod_id)
                           .values(description=text, updated_at=utcnow()))
    await audit(engine, principal.name, "vod.description", f"vod:{vod_id}")
    return Response(status_code=204)


@router.put("/vods/{vod_id}/description", status_code=204, summary="Set the custom description (operator)")
async def put_description(request: Request, vod_id: str,
                          principal: Principal = Depends(require_operator)) -> Response:
    return await _set_description(request, vod_id, principal)


@router.patch("/vods/{vod_id}/description", status_code=204, summary="Set the custom description (operator)")
async def patch_description(request: Request, vod_id: str,
                            principal: Principal = Depends(require_operator)) -> Response:
    return await _set_description(request, vod_id, principal)


# ---- registration -----------------------------------------------------------------------------

def register(runtime: Runtime) -> None:
    """Add the archive's HTTP routes, its /status//admin/monitor fields and the LOG_LEVEL
    override watcher to the runtime (called from the archive domain's `setup`)."""
    from reelhouse.archive import api_admin, api_auth
    from reelhouse.archive.settings_overrides import watch_log_level

    api_auth.oauth_flow_settings(runtime.settings)  # a bad TWITCH_SCOPES etc. stops start-up here
    runtime.routers.extend([router, api_admin.router, api_auth.router])
    runtime.status_providers.append(api_admin.archive_monitor)

    async def log_level_service(rt: Runtime, stop: Any) -> None:
        await watch_log_level(rt.engine, stop)

    runtime.services.append(log_level_service)
