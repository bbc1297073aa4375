"""Chat routes (vod-tender's paths, reference §1 #17-18).

`GET /vods/{id}/chat?from&to&limit` answers vod-tender's bare JSON array of chat lines
(messages and `/me` actions; other events with `?kind=`); an unknown VOD has no chat, an empty
array, as in vod-tender. The keyset cursor of the next page travels in `X-Next-Cursor` and
`Link: <...>; rel="next"` (as `GET /vods` does), and `cursor=` continues there.
`GET /vods/{id}/chat/stream?from&speed` is the paced SSE replay: `id:` per event, resume with
`Last-Event-ID` (or `last_event_id=` for clients that cannot set headers), `: heartbeat`
comments, `retry:`, and a final `end` event. Both are anonymous reads, like vod-tender.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import StreamingResponse

from reelhouse.archive.chat.replay import clamp_from, clamp_speed, message_json, sse_replay
from reelhouse.archive.chat.rows import CHAT_LINE_KINDS, KINDS
from reelhouse.archive.http.schemas import ChatMessage
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store.chat import ChatCursor, CursorError, cursor_of, fetch_page, vod_state
from reelhouse.core.http.deps import PublicReader, component
from reelhouse.core.http.errors import errors, event_stream_doc

router = APIRouter(tags=["chat"])
Services = Annotated[ArchiveServices, component(ArchiveServices)]
DEFAULT_LIMIT, MAX_LIMIT = 1000, 5000
Cursor = Annotated[str | None, Query(max_length=200, description="X-Next-Cursor of the previous page")]


def _cursor(token: str) -> ChatCursor:
    try:
        return ChatCursor.decode(token)
    except CursorError:
        raise HTTPException(400, "invalid cursor; pass the X-Next-Cursor value of the previous page") from None


@router.get(
    "/vods/{vod_id}/chat",
    response_model=list[ChatMessage],
    responses=errors(400),
    summary="Chat of a VOD between two offsets (seconds), in order",
)
async def chat_window(
    response: Response,
    vod_id: str,
    services: Services,
    _reader: PublicReader,
    from_: Annotated[float, Query(alias="from", description="rel_timestamp lower bound (inclusive)")] = 0.0,
    to: Annotated[float, Query(description="upper bound (inclusive); 0 = to the end")] = 0.0,
    limit: Annotated[int, Query(description=f"1-{MAX_LIMIT}; out of range means {DEFAULT_LIMIT}")] = DEFAULT_LIMIT,
    cursor: Cursor = None,
    kind: Annotated[
        list[str] | None,
        Query(max_length=len(KINDS), description=f"these kinds ({', '.join(KINDS)}); default message, action"),
    ] = None,
) -> list[dict[str, Any]]:
    # vod-tender answered out-of-range values with its defaults instead of an error; kept.
    if limit <= 0 or limit > MAX_LIMIT:
        limit = DEFAULT_LIMIT
    start = clamp_from(from_)
    until = to if to > 0 and to == to else None  # `to == to` is False only for NaN
    unknown = sorted(set(kind or ()) - set(KINDS))
    if unknown:
        raise HTTPException(400, f"unknown kind {unknown[0][:32]!r}; expected one of {', '.join(KINDS)}")
    rows = await fetch_page(
        services.vods.engine,
        vod_id,
        from_rel=start,
        to_rel=until,
        after=_cursor(cursor) if cursor else None,
        limit=limit + 1,
        kinds=kind or CHAT_LINE_KINDS,
    )
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


@router.get(
    "/vods/{vod_id}/chat/stream",
    response_class=StreamingResponse,
    responses={
        200: event_stream_doc(
            "Server-Sent Events: one `data: {ChatMessage}` per event with an `id:`, "
            "`: heartbeat` comments, and a final `event: end`"
        ),
        **errors(400, 404),
    },
    summary="Server-Sent-Events replay of a VOD's chat, paced by speed",
)
async def chat_stream(
    vod_id: str,
    services: Services,
    _reader: PublicReader,
    from_: Annotated[float, Query(alias="from")] = 0.0,
    speed: Annotated[float, Query(description="1 = real time; (0, 100]")] = 1.0,
    last_event_id: Cursor = None,
    last_event_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
) -> StreamingResponse:
    engine = services.vods.engine
    state = await vod_state(engine, vod_id)
    if not state.exists:
        raise HTTPException(404, f"vod {vod_id} not found")
    token = last_event_header or last_event_id
    stream = sse_replay(
        engine,
        vod_id,
        from_rel=clamp_from(from_),
        speed=clamp_speed(speed),
        resume_after=_cursor(token) if token else None,
        heartbeat=services.chat_settings.sse_heartbeat.total_seconds(),
        follow_live=state.is_placeholder,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )
