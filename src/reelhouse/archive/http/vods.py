"""VOD routes with vod-tender's paths and JSON field names.

Compatibility choices: `GET /vods` still answers a bare JSON array (vod-tender's shape); the
keyset cursor for the next page travels in `X-Next-Cursor` and a `Link: <...>; rel="next"`
header. `id` in every VOD body is the Twitch VOD id, as in vod-tender. Reads are anonymous
(vod-tender served them publicly) but hide the server's file paths from anonymous callers;
every mutation needs an operator.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse

from reelhouse.archive.http.schemas import (
    TaskOutcome,
    VodCancelled,
    VodDescription,
    VodDetail,
    VodListItem,
    VodProgress,
    rfc3339,
)
from reelhouse.archive.kinds import DownloadState
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store import CursorError, PageCursor, VodNotFound
from reelhouse.core.http.deps import DB_INT_MAX, Engine, JsonObject, Operator, PublicReader, component
from reelhouse.core.http.errors import errors, json_body_doc, object_schema
from reelhouse.core.jobs import control, states
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.users import Principal

router = APIRouter(tags=["vods"])
Services = Annotated[ArchiveServices, component(ArchiveServices)]
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
MAX_DESCRIPTION = 4000  # YouTube allows 5000 bytes; the attribution lines need the rest
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")


async def find_vod(services: ArchiveServices, vod_id: str) -> Any:
    try:
        return await services.vods.require(vod_id)
    except VodNotFound as exc:
        raise HTTPException(404, str(exc)) from None


def list_item(row: Any) -> VodListItem:
    return VodListItem(
        id=row.twitch_vod_id,
        title=row.title or "",
        date=rfc3339(row.date or row.created_at) or "",
        processed=bool(row.processed),
        youtube_url=row.youtube_url,
        channel=row.channel,
    )


def visible_path(row: Any, caller: Principal | None) -> str | None:
    """The server's file path, for signed-in callers only (anonymous reads are public)."""
    return row.downloaded_path if caller is not None else None


@router.get(
    "/vods",
    response_model=list[VodListItem],
    responses=errors(400),
    summary="VODs, newest first; next page cursor in X-Next-Cursor / Link",
)
async def list_vods(
    response: Response,
    services: Services,
    _reader: PublicReader,
    channel: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["pending", "errored", "processed"] | None, Query()] = None,
    limit: Annotated[int, Query(description=f"1-{MAX_LIMIT}; out of range means {DEFAULT_LIMIT}")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200, description="X-Next-Cursor of the previous page")] = None,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> list[VodListItem]:
    # vod-tender answered out-of-range limits with its default instead of an error; kept.
    if limit <= 0 or limit > MAX_LIMIT:
        limit = DEFAULT_LIMIT
    try:
        after = PageCursor.decode(cursor) if cursor else None
    except CursorError:
        raise HTTPException(400, "invalid cursor; pass the X-Next-Cursor value of the previous page") from None
    rows, next_cursor = await services.vods.page(
        limit=limit, channel=channel.lower() if channel else None, state=status, after=after, offset=offset
    )
    if next_cursor is not None:
        token = next_cursor.encode()
        params: dict[str, Any] = {"limit": limit, "cursor": token}
        params.update({k: v for k, v in (("channel", channel), ("status", status)) if v})
        response.headers["X-Next-Cursor"] = token
        response.headers["Link"] = f'</vods?{urlencode(params)}>; rel="next"'
    return [list_item(row) for row in rows]


@router.get("/vods/{vod_id}", response_model=VodDetail, responses=errors(404), summary="One VOD (Twitch VOD id)")
async def get_vod(vod_id: str, services: Services, caller: PublicReader) -> VodDetail:
    row = await find_vod(services, vod_id)
    return VodDetail(
        **list_item(row).model_dump(),
        duration_seconds=row.duration_seconds,
        downloaded_path=visible_path(row, caller),
        download_state=row.download_state,
        download_retries=row.download_retries,
        download_total=row.download_total,
        progress_updated_at=rfc3339(row.progress_updated_at),
        description=row.description or "",
        processing_error=row.processing_error,
        priority=row.priority,
        skip_upload=bool(row.skip_upload),
        job_id=row.job_id,
    )


def progress_percent(row: Any) -> float:
    """Bytes over total when known, else 100 once the file is complete (or nothing was to be
    downloaded), else a percentage in a raw yt-dlp state line (vod-tender stored those), else
    0. A VOD that failed is `processed` (vod-tender's "permanently failed") but not 100 %."""
    if row.download_total and row.download_total > 0:
        return round(max(0.0, min(100.0, 100.0 * (row.download_bytes or 0) / row.download_total)), 2)
    if row.download_state == DownloadState.COMPLETE or (row.processed and not row.processing_error):
        return 100.0
    match = _PERCENT.search(row.download_state or "")
    if match:
        return max(0.0, min(100.0, float(match.group(1))))
    return 0.0


@router.get(
    "/vods/{vod_id}/progress",
    response_model=VodProgress,
    responses=errors(404),
    summary="Download/processing progress of one VOD",
)
async def vod_progress(vod_id: str, services: Services, caller: PublicReader) -> VodProgress:
    row = await find_vod(services, vod_id)
    return VodProgress(
        vod_id=row.twitch_vod_id,
        state=row.download_state,
        percent=progress_percent(row),
        retries=row.download_retries,
        total_bytes=row.download_total,
        downloaded_path=visible_path(row, caller),
        processed=bool(row.processed),
        processing_error=row.processing_error,
        youtube_url=row.youtube_url,
        progress_updated_at=rfc3339(row.progress_updated_at),
        bytes=row.download_bytes,
        speed=row.download_speed,
        eta=row.download_eta_seconds,
    )


async def _open_statuses(engine: Any, job_id: int | None) -> set[str]:
    if job_id is None:
        return set()
    job = await control.get_job(engine, job_id)
    return {t["status"] for t in (job or {}).get("tasks", [])} & {states.QUEUED, states.RUNNING}


@router.post(
    "/vods/{vod_id}/reprocess",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "reset; the new job is named in X-Job-Id and Location"},
        **errors(404, 409),
    },
    summary="Reset a VOD's processing state and enqueue a fresh job (operator)",
)
async def reprocess_vod(vod_id: str, services: Services, engine: Engine, principal: Operator) -> Response:
    row = await find_vod(services, vod_id)
    if row.is_placeholder:
        raise HTTPException(409, f"vod {vod_id} is a live-chat placeholder; there is no archive to process yet")
    if states.RUNNING in await _open_statuses(engine, row.job_id):
        raise HTTPException(
            409, f"vod {vod_id} is being processed (job {row.job_id}); POST /vods/{vod_id}/cancel first"
        )
    if row.job_id is not None:
        await control.cancel_job(engine, row.job_id)  # a still-queued old job is superseded
    await services.vods.reset_for_reprocess(vod_id)
    job_id = await services.vod_jobs.enqueue(vod_id, reprocess=True)
    await audit(engine, principal.name, "vod.reprocess", f"vod:{vod_id}", {"job_id": job_id})
    # 204 like vod-tender; the new job is named in headers for clients that want to follow it.
    return Response(status_code=204, headers={"X-Job-Id": str(job_id), "Location": f"/v1/jobs/{job_id}"})


@router.post(
    "/vods/{vod_id}/cancel",
    response_model=VodCancelled,
    status_code=202,
    responses={
        202: {"description": "work was queued or running and is being cancelled"},
        204: {"description": "nothing was running"},
        **errors(404),
    },
    summary="Cancel a VOD's job: 202 if work was stopped, else 204 (operator)",
)
async def cancel_vod(vod_id: str, services: Services, engine: Engine, principal: Operator) -> Any:
    row = await find_vod(services, vod_id)
    outcome = await control.cancel_job(engine, row.job_id) if row.job_id is not None else []
    if not outcome:
        return Response(status_code=204)
    await audit(engine, principal.name, "vod.cancel", f"vod:{vod_id}", {"job_id": row.job_id})
    body = VodCancelled(vod_id=vod_id, job_id=row.job_id, tasks=[TaskOutcome(task_id=t, status=s) for t, s in outcome])
    return JSONResponse(body.model_dump(), status_code=202)


@router.get(
    "/vods/{vod_id}/description",
    response_model=VodDescription,
    responses=errors(404),
    summary="Custom YouTube description of a VOD",
)
async def get_description(vod_id: str, services: Services, _reader: PublicReader) -> VodDescription:
    row = await find_vod(services, vod_id)
    return VodDescription(vod_id=row.twitch_vod_id, description=row.description or "")


_DESCRIPTION_BODY = json_body_doc(
    object_schema(["description"], description={"type": "string", "maxLength": MAX_DESCRIPTION})
)


async def _set_description(vod_id: str, body: dict[str, Any], services: Services, principal: Principal) -> Response:
    await find_vod(services, vod_id)
    text = body.get("description")
    if not isinstance(text, str):
        raise HTTPException(400, "description must be a string")
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise HTTPException(400, f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION}")
    await services.vods.update(vod_id, description=text)
    await audit(services.vods.engine, principal.name, "vod.description", f"vod:{vod_id}")
    return Response(status_code=204)


for _method in ("PUT", "PATCH"):

    @router.api_route(
        "/vods/{vod_id}/description",
        methods=[_method],
        status_code=204,
        response_class=Response,
        responses=errors(400, 404),
        openapi_extra=_DESCRIPTION_BODY,
        summary="Set the custom description (operator)",
        name=f"set_description_{_method.lower()}",
    )
    async def set_description(vod_id: str, body: JsonObject, services: Services, principal: Operator) -> Response:
        return await _set_description(vod_id, body, services, principal)
