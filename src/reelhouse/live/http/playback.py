"""Live playback: the stream's master playlist, variant playlists and segments from storage,
with the API's credentials (`/v1/streams/{id}/live/...`) or a signed link
(`/live/signed/{token}/{id}/...`, the same HMAC links as encode's `/media/signed`).
LL-HLS playlists honour blocking reloads (`_HLS_msn`, `_HLS_part`; blocking.py)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from reelhouse.core.http.deps import DbId, Viewer, component
from reelhouse.core.http.errors import error_response, errors
from reelhouse.core.security.links import check_token
from reelhouse.core.storage import ObjectNotFound
from reelhouse.live.blocking import DirectiveError, hold_hinted, hold_playlist, parse_directive
from reelhouse.live.services import LiveServices

router = APIRouter(tags=["live"])
Services = component(LiveServices)
_PATH = re.compile(r"^(?:[A-Za-z0-9_-]{1,32}/)?[A-Za-z0-9_.-]{1,96}\.(m3u8|ts)$")
_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t"}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
# LL-HLS delivery directives (RFC 8216bis 6.2.5.2): strings here, parsed (400 when wrong) by blocking.py.
HlsMsn = Annotated[
    str | None, Query(alias="_HLS_msn", max_length=12, description="LL-HLS: hold until this segment exists")
]
HlsPart = Annotated[str | None, Query(alias="_HLS_part", max_length=12, description="LL-HLS: ... and this part of it")]
BODY: dict[int | str, dict[str, object]] = {
    200: {"description": "playlist or segment", "content": dict.fromkeys(_TYPES.values(), _BINARY)}
}


async def serve(services: LiveServices, stream_id: int, path: str, viewer: str, query: Mapping[str, str]) -> Response:
    match = _PATH.match(path)
    if match is None or ".." in path:
        return error_response(404, "not found")
    key = f"{services.hls_folder(stream_id)}/{path}"
    storage = services.storage()
    kind = match.group(1)

    async def read(key: str = key) -> str | None:
        try:
            async with contextlib.aclosing(storage.get(key)) as body:
                return b"".join([chunk async for chunk in body]).decode()
        except ObjectNotFound:
            return None

    folder, _, name = key.rpartition("/")
    if kind == "m3u8":
        services.viewers.touch(stream_id, viewer)
        try:
            directive = parse_directive(query)
            if directive is None:
                text = await read()
            else:
                held = await hold_playlist(read, folder, directive, services.signals)
                if held.timed_out:
                    # RFC 8216bis: a blocking reload not satisfied in time is answered 503.
                    return error_response(503, "the requested part did not appear in time", {"Retry-After": "1"})
                text = held.text
        except DirectiveError as exc:
            return error_response(400, str(exc))
        if text is None:
            return error_response(404, "the stream is not live (no playlist yet)")
        return Response(text.encode(), media_type=_TYPES[kind], headers={"Cache-Control": "no-cache"})
    try:
        info = await storage.stat(key)
    except ObjectNotFound:

        async def exists() -> bool:
            try:
                await storage.stat(key)
            except ObjectNotFound:
                return False
            return True

        # The LL-HLS preload hint names the next part before it exists: such a request waits for it.
        if not await hold_hinted(exists, lambda: read(f"{folder}/index.m3u8"), folder, name, services.signals):
            return error_response(404, "not found")
        info = await storage.stat(key)
    stream = storage.get(key)
    return StreamingResponse(
        stream,
        media_type=_TYPES[kind],
        headers={"Content-Length": str(info.size), "Cache-Control": "private, max-age=3600"},
        background=BackgroundTask(stream.aclose),
    )


@router.get(
    "/v1/streams/{stream_id}/live/{path:path}",
    response_class=Response,
    responses={**BODY, **errors(400, 404, 503)},
    summary="Live HLS of a stream: master.m3u8, <rendition>/index.m3u8 and segments; viewers",
)
async def live_media(
    stream_id: DbId, path: str, caller: Viewer, msn: HlsMsn = None, part: HlsPart = None,
    services: LiveServices = Services,
) -> Response:  # fmt: skip
    return await serve(services, stream_id, path, f"p:{caller.name}:{caller.token_id}", _directives(msn, part))


@router.get(
    "/live/signed/{token}/{stream_id}/{path:path}",
    response_class=Response,
    responses={**BODY, **errors(400, 403, 404, 503)},
    summary="Live HLS through a signed link (no credentials)",
)
async def live_signed(
    request: Request, token: Annotated[str, Path(max_length=200)], stream_id: DbId, path: str,
    msn: HlsMsn = None, part: HlsPart = None, services: LiveServices = Services,
) -> Response:  # fmt: skip
    reason = check_token(services.link_secret, token, f"{services.hls_folder(stream_id)}/{path}")
    if reason is not None:
        return error_response(403, reason)
    client = request.client.host if request.client else "?"
    return await serve(services, stream_id, path, f"l:{token[-12:]}:{client}", _directives(msn, part))


def _directives(msn: str | None, part: str | None) -> dict[str, str]:
    found = {"_HLS_msn": msn, "_HLS_part": part}
    return {k: v for k, v in found.items() if v is not None}
