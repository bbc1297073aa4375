"""Chat routes (vod-tender's paths, reference §1 #17-18) and the chat part's `register` hook.

`GET /vods/{id}/chat?from&to&limit` answers vod-tender's bare JSON array; the keyset cursor of
the next page travels in `X-Next-Cursor` and `Link: <...>; rel="next"` (as `GET /vods` does),
and `cursor=` continues there. `GET /vods/{id}/chat/stream?from&speed` is the paced SSE replay:
`id:` per event, resume with `Last-Event-ID` (or `last_event_id=` for clients that cannot set
headers), `: heartbeat` comments, `retry:`, and a final `end` event. Both are anonymous reads,
like the VOD routes and like vod-tender.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from reelhouse.archive.chat.reconcile import TASK_KIND, reconcile_handler
from reelhouse.archive.chat.replay import (
    ChatCursor,
    CursorError,
    clamp_from,
    clamp_speed,
    cursor_of,
    fetch_page,
    message_json,
    sse_replay,
    vod_exists,
)
from reelhouse.archive.chat.rows import KINDS
from reelhouse.archive.chat.service import ChatService, chat_service, run_chat_service
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.runtime import Runtime

__all__ = ["register", "router", "run_chat_service"]

router = APIRouter(tags=["chat"])
DEFAULT_LIMIT, MAX_LIMIT = 1000, 5000


def _service(request: Request) -> ChatService:
    return chat_service(request.app.state.runtime)


def _cursor(token: str) -> ChatCursor:
    try:
        return ChatCursor.decode(token)
    except CursorError:
        raise HTTPException(400, "invalid cursor; pass the X-Next-Cursor value of the previous page") from None


async def _require_vod(request: Request, vod_id: str) -> bool:
    exists, placeholder = await vod_exists(request.app.state.runtime.engine, vod_id)
    if not exists:
        raise HTTPException(404, f"vod {vod_id} not found")
    return placeholder


@router.get("/vods/{vod_id}/chat", summary="Chat of a VOD between two offsets (seconds), in order")
async def chat_window(
    request: Request,
    response: Response,
    vod_id: str,
    from_: float = Query(0.0, alias="from", description="rel_timestamp lower bound (inclusive)"),
    to: float = Query(0.0, description="upper bound (inclusive); 0 = to the end"),
    limit: int = Query(DEFAULT_LIMIT),
    cursor: str | None = Query(None, description="X-Next-Cursor of the previous page"),
    kind: list[str] | None = Query(None, description=f"only these kinds ({', '.join(KINDS)})"),
) -> list[dict[str, Any]]:
    # vod-tender answered out-of-range values with its defaults instead of an error; kept.
    if limit <= 0 or limit > MAX_LIMIT:
        limit = DEFAULT_LIMIT
    start = clamp_from(from_)
    until = to if to > 0 and to == to else None  # `to == to` is False only for NaN
    unknown = sorted(set(kind or ()) - set(KINDS))
    if unknown:
        raise HTTPException(400, f"unknown kind {unknown[0]!r}; expected one of {', '.join(KINDS)}")
    await _require_vod(request, vod_id)
    rows = await fetch_page(request.app.state.runtime.engine, vod_id, from_rel=start, to_rel=until,
                            after=_cursor(cursor) if cursor else None, limit=limit + 1, kinds=kind)
    page = rows[:limit]
    if len(rows) > limit:
        token = cursor_of(page[-1]).encode()
        params: dict[str, Any] = {"from": start, "limit": limit, "cursor": token}
        if until is not None:
            params["to"] = until
        query = urlencode(params) + "".join(f"&kind={k}" for k in kind or ())
        response.headers["X-Next-Cursor"] = token
        response.headers["Link"] = f'</vods/{vod_id}/chat?{query}>; rel="next"'
    return [message_json(row) for row in page]


@router.get("/vods/{vod_id}/chat/stream", summary="Server-Sent-Events replay of a VOD's chat, paced by speed",
            response_class=StreamingResponse)
async def chat_stream(
    request: Request,
    vod_id: str,
    from_: float = Query(0.0, alias="from"),
    speed: float = Query(1.0, description="1 = real time; (0, 100]"),
    last_event_id: str | None = Query(None, description="resume after this event id"),
    last_event_header: str | None = Header(None, alias="Last-Event-ID"),
) -> StreamingResponse:
    placeholder = await _require_vod(request, vod_id)
    token = last_event_header or last_event_id
    chat: ChatSettings = _service(request).chat
    stream = sse_replay(
        request.app.state.runtime.engine, vod_id, from_rel=clamp_from(from_), speed=clamp_speed(speed),
        resume_after=_cursor(token) if token else None, heartbeat=chat.sse_heartbeat.total_seconds(),
        follow_live=placeholder)
    return StreamingResponse(stream, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"})


def register(runtime: Runtime, chat: ChatSettings | None = None) -> ChatService:
    """Routes, the `chat.reconcile` task kind, /status fields, and the recording service
    (added to `runtime.services` only when auto or manual mode is configured)."""
    service = chat_service(runtime, chat)
    settings = service.chat
    runtime.routers.append(router)
    runtime.registry.register(TaskKind(
        TASK_KIND,
        reconcile_handler(runtime.engine, service.helix, match_window=settings.reconcile_match_window,
                          give_up_after=settings.reconcile_window, still_recording=service.is_recording),
        # The handler ends the retries itself once CHAT_RECONCILE_WINDOW has passed.
        max_attempts=1_000_000, backoff_base=settings.reconcile_retry.total_seconds(),
        backoff_cap=max(settings.reconcile_retry_max, settings.reconcile_retry).total_seconds(),
        timeout=timedelta(minutes=10).total_seconds()))

    async def chat_status(_runtime: Runtime) -> dict[str, Any]:
        return {"chat": service.status()}

    async def close_helix(_runtime: Runtime, stop: Any) -> None:
        await stop.wait()
        await service.aclose()

    runtime.status_providers.append(chat_status)
    runtime.services.append(close_helix)
    if settings.enabled:
        runtime.services.append(run_chat_service)
    return service
