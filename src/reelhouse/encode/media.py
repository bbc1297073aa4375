"""Serving encode outputs over HTTP, from either storage backend, the way players expect.

Two routes:
- `GET /media/{key}`: any viewer (API token or basic auth). Players and tools pass the same
  header to every request (`ffprobe -headers`, `yt-dlp --add-header`, hls.js `xhrSetup`).
- `GET /media/signed/{token}/{key}`: no credentials; the token is an expiring HMAC over the
  asset's output prefix. It sits in the *path*, so the relative URIs inside the playlists
  (`720p/index.m3u8`, `seg_00000.ts`) resolve under the same token: one link plays a whole
  ladder. A per-object signed URL (S3 presign, `/files`) cannot do that, since relative URL
  resolution drops the query string.

Only keys under ENCODE_OUTPUT_PREFIX are served: uploads, archive VODs and vault media are not.
Content types come from `guess_content_type` (`.m3u8` application/vnd.apple.mpegurl, `.ts`
video/mp2t, `.mp4` video/mp4, `.m4s` video/iso.segment); single byte ranges give 206/416.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from reelhouse.core.http.deps import Viewer
from reelhouse.core.http.errors import error_body, errors
from reelhouse.core.security.audit import master_keys_of
from reelhouse.core.security.keys import MasterKeys
from reelhouse.core.security.links import check_token, make_token
from reelhouse.core.storage import InvalidKey, InvalidRange, ObjectNotFound, validate_key
from reelhouse.core.storage.signed_routes import parse_range_header
from reelhouse.encode.service import MEDIA_ROUTE, EncodeService

LINK_KEY_PURPOSE = "encode/media-link/v1"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_MEDIA_TYPES = ("application/vnd.apple.mpegurl", "video/mp2t", "video/mp4", "video/iso.segment")
MEDIA_BODY: dict[int | str, dict[str, object]] = {
    200: {
        "description": "the object (playlist, segment or MP4)",
        "content": dict.fromkeys(_MEDIA_TYPES, _BINARY),
    },
    206: {"description": "the requested byte range", "content": {"video/mp4": _BINARY}},
}


def link_secret(keys: MasterKeys) -> bytes:
    """A key for playback links only, derived from the master key (configured or generated), so
    a leaked link never exposes the master key. Rotating the master key ends the old links."""
    return keys.subkey(LINK_KEY_PURPOSE)


def _service_keys(service: EncodeService) -> MasterKeys:
    return master_keys_of(service.engine) or MasterKeys.from_settings(service.runtime.settings)


def signed_media_path(secret: bytes, prefix: str, key: str, ttl_seconds: float) -> tuple[str, int]:
    expires = int(time.time() + ttl_seconds)
    return f"{MEDIA_ROUTE}/signed/{make_token(secret, prefix, expires)}/{key}", expires


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


async def serve_object(service: EncodeService, request: Request, key: str) -> Response:
    try:
        validate_key(key)
    except InvalidKey as exc:
        return _error(400, str(exc))
    if not service.owns_output(key):
        return _error(404, "not found")  # saying more would map the rest of the storage
    storage = service.storage()
    try:
        info = await storage.stat(key)
    except ObjectNotFound:
        return _error(404, "not found")
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": info.content_type,
        "ETag": f'"{info.etag}"',
        # astimezone: S3 reports dateutil's tzutc, which format_datetime's usegmt refuses.
        "Last-Modified": format_datetime(info.modified.astimezone(UTC), usegmt=True),
        "Cache-Control": "private",
    }
    try:
        span = parse_range_header(request.headers.get("range"), info.size)
    except InvalidRange:
        return _error(416, "requested range not satisfiable", {"Content-Range": f"bytes */{info.size}"})
    status, length = 200, info.size
    if span is not None:
        status, length = 206, span[1] - span[0] + 1
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers)
    chunks = storage.get(key, span)
    # A client that hangs up mid-body leaves the iterator half-read; close it (and its file or
    # S3 connection) when the response ends either way.
    return StreamingResponse(chunks, status_code=status, headers=headers, background=BackgroundTask(_close, chunks))


async def _close(chunks: object) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def build_media_router(service: EncodeService) -> APIRouter:
    router = APIRouter(tags=["media"])
    keys = _service_keys(service)

    # Registered before the catch-all `{key:path}` route, which would otherwise match it.
    @router.get(
        f"{MEDIA_ROUTE}/signed/{{token}}/{{key:path}}",
        response_class=Response,
        responses={**MEDIA_BODY, **errors(400, 403, 404, 416)},
        summary="Encode output through a signed playback link (no credentials)",
    )
    async def serve_signed(request: Request, token: Annotated[str, Path(max_length=200)], key: str) -> Response:
        reason = check_token(link_secret(keys), token, key)
        if reason is not None:
            return _error(403, reason)
        return await serve_object(service, request, key)

    @router.get(
        f"{MEDIA_ROUTE}/{{key:path}}",
        response_class=Response,
        responses={**MEDIA_BODY, **errors(400, 404, 416)},
        summary="Encode output (playlists, segments, MP4) with byte ranges; viewers",
    )
    async def serve_media(request: Request, key: str, _viewer: Viewer) -> Response:
        return await serve_object(service, request, key)

    # HEAD answers like GET without a body; kept out of the schema, where it would only repeat GET.
    router.add_api_route(
        f"{MEDIA_ROUTE}/signed/{{token}}/{{key:path}}", serve_signed, methods=["HEAD"], include_in_schema=False
    )
    router.add_api_route(f"{MEDIA_ROUTE}/{{key:path}}", serve_media, methods=["HEAD"], include_in_schema=False)
    return router


def playback_link(service: EncodeService, prefix: str, key: str) -> tuple[str, int]:
    """A signed playback URL and its expiry: absolute under PUBLIC_BASE_URL when that is set (a
    player on another host opens it as is), else a path on this server."""
    path, expires = signed_media_path(
        link_secret(_service_keys(service)), prefix, key, service.settings.media_link_ttl.total_seconds()
    )
    base = service.runtime.settings.server.public_base_url.rstrip("/")
    return (f"{base}{path}" if base else path), expires
