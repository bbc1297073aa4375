"""Archive pages: channels, the VOD list (search, filters, keyset pages), a VOD with its player,
chat replay synced to the player, live progress over SSE and the operator's actions.

Pages read through the archive's stores; actions are the archive API's own routes, called by
the page with the session (so roles and messages are the API's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from reelhouse.archive.http.vods import progress_percent
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store import CursorError, PageCursor
from reelhouse.archive.store.vods import STATE_FILTERS
from reelhouse.core.http.deps import component
from reelhouse.core.jobs import states
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.web.settings import WebSettings
from reelhouse.web.shell import PageError, ViewerPage

PAGE_SIZE = 50
HERE = Path(__file__).parent
Services = Annotated[ArchiveServices, component(ArchiveServices)]
VodId = Annotated[str, PathParam(max_length=64)]
# A progress stream ends after this long; the browser's EventSource reconnects by itself.
STREAM_SECONDS = 600.0
STREAM_EVERY = 1.0

router = APIRouter(include_in_schema=False)


def vod_state(row: Any) -> str:
    if row.processing_error:
        return "errored"
    return "processed" if row.processed else "pending"


def progress_of(row: Any, job_status: str | None) -> dict[str, Any]:
    """What the progress panel shows; sent again over SSE whenever it changes."""
    return {
        "state": row.download_state or "",
        "vod_state": vod_state(row),
        "percent": progress_percent(row),
        "bytes": row.download_bytes or 0,
        "total": row.download_total or 0,
        "speed": row.download_speed,
        "eta": row.download_eta_seconds,
        "retries": row.download_retries or 0,
        "error": row.processing_error or "",
        "youtube_url": row.youtube_url or "",
        "job_status": job_status or "",
        "has_file": bool(row.downloaded_path),
    }


def _day(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time(), tzinfo=UTC)
    except ValueError:
        raise PageError(400, f"{field}: expected a date as YYYY-MM-DD, got {value[:20]!r}") from None


@router.get("/archive/vods", response_class=HTMLResponse)
async def vods_page(
    page: ViewerPage,
    services: Services,
    q: Annotated[str, Query(max_length=200)] = "",
    channel: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    if state and state not in STATE_FILTERS:
        raise PageError(400, f"unknown state {state!r}; expected one of {', '.join(STATE_FILTERS)}")
    try:
        after = PageCursor.decode(cursor) if cursor else None
    except CursorError:
        raise PageError(400, "invalid cursor; use the page's Older link") from None
    until_day = _day(until, "until")
    rows, next_cursor = await services.vods.browse(
        limit=PAGE_SIZE,
        channel=channel or None,
        state=state or None,
        title=q.strip() or None,
        since=_day(since, "since"),
        until=until_day + timedelta(days=1) if until_day else None,
        after=after,
    )
    filters = {"q": q, "channel": channel, "state": state, "since": since, "until": until}
    template = "archive/vods_rows.html" if page.request.headers.get("hx-request") else "archive/vods.html"
    return page.render(
        template,
        vods=[{"row": row, "state": vod_state(row)} for row in rows],
        next_cursor=next_cursor.encode() if next_cursor else None,
        filters=filters,
        query_base="&".join(f"{k}={v}" for k, v in filters.items() if v),
        channels=[c.name for c in await services.channels.list_channels(include_disabled=True)],
        states=tuple(STATE_FILTERS),
        paged=bool(cursor),
    )


@router.get("/archive/vods/{vod_id}", response_class=HTMLResponse)
async def vod_page(page: ViewerPage, services: Services, vod_id: VodId) -> HTMLResponse:
    row = await services.vods.with_job(vod_id)
    if row is None or row.is_placeholder:
        raise PageError(404, f"vod {vod_id} not found")
    emote_url = page.section(WebSettings).emote_url
    return page.render(
        "archive/vod.html",
        vod=row,
        state=vod_state(row),
        progress=progress_of(row, row.job_status),
        progress_json=json.dumps(progress_of(row, row.job_status)),
        emote_url=emote_url,
    )


@router.get("/archive/vods/{vod_id}/file")
async def vod_file(_page: ViewerPage, services: Services, vod_id: VodId) -> FileResponse:
    """The downloaded file for the player; byte ranges, so seeking fetches only what it needs."""
    row = await services.vods.get(vod_id)
    path = Path(row.downloaded_path) if row is not None and row.downloaded_path else None
    if path is None or not path.is_file():
        raise PageError(404, f"vod {vod_id} has no downloaded file")
    return FileResponse(path, media_type="video/mp4")


@router.get("/archive/vods/{vod_id}/progress/stream")
async def vod_progress_stream(_page: ViewerPage, services: Services, vod_id: VodId) -> StreamingResponse:
    """Server-Sent Events: the progress panel's data each time it changes."""
    if await services.vods.get(vod_id) is None:
        raise PageError(404, f"vod {vod_id} not found")

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last: dict[str, Any] | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_SECONDS
        while loop.time() < deadline:
            row = await services.vods.with_job(vod_id)
            if row is None:
                return
            current = progress_of(row, row.job_status)
            if current != last:
                yield f"data: {json.dumps(current)}\n\n"
                last = current
            else:
                yield ": idle\n\n"
            await asyncio.sleep(STREAM_EVERY)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get("/archive/channels", response_class=HTMLResponse)
async def channels_page(page: ViewerPage, services: Services) -> HTMLResponse:
    listed = await services.channels.list_channels(include_disabled=True)
    waiting = await services.vods.unprocessed_by_channel()
    breakers = {b.scope: b for b in await services.breaker.all_states()}
    rows = []
    for channel in listed:
        scoped = [b for scope, b in breakers.items() if scope == channel.name or scope.endswith(":" + channel.name)]
        worst = max(scoped, key=lambda b: ("closed", "half_open", "open").index(b.state), default=None)
        rows.append({"channel": channel, "waiting": waiting.get(channel.name, 0), "breaker": worst})
    return page.render("archive/channels.html", channels=rows, job_final=states.JOB_FINAL)


def archive_pages() -> PageSet:
    return PageSet(
        name="archive",
        title="Archive",
        router=router,
        templates=HERE / "templates",
        static=HERE / "static",
        nav=(NavLink("VODs", "/archive/vods"), NavLink("Channels", "/archive/channels")),
    )
