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

import base64
import contextlib
import hashlib
import hmac
import time
from datetime import timezone
from email.utils import format_datetime

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from reelhouse.core.http.errors import error_body
from reelhouse.core.security.http_auth import require_viewer
from reelhouse.core.storage import InvalidKey, InvalidRange, ObjectNotFound, validate_key
from reelhouse.core.storage.signed_routes import parse_range_header
from reelhouse.encode.service import MEDIA_ROUTE, EncodeService

_CONTEXT = b"reelhouse/encode/media-link/v1"


def link_secret(master_key: str) -> bytes:
    """A key for playback links only, derived so a leaked link never exposes the master key."""
    return hmac.new(master_key.encode(), _CONTEXT, hashlib.sha256).digest() if master_key else b""


def _mac(secret: bytes, scope: str, expires: int) -> str:
    digest = hmac.new(secret, f"{scope}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).rstrip(b"=").decode("ascii")


def make_token(secret: bytes, scope: str, expires: int) -> str:
    """`<scope depth>.<expiry>.<mac>`: the scope is the first `depth` segments of every key it opens."""
    return f"{len(scope.split('/'))}.{expires}.{_mac(secret, scope, expires)}"


def check_token(secret: bytes, token: str, key: str, now: float | None = None) -> str | None:
    """None if `token` opens `key`, else the reason it does not."""
    try:
        depth_text, expires_text, mac = token.split(".")
        depth, expires = int(depth_text), int(expires_text)
    except ValueError:
        return "malformed link token"
    parts = key.split("/")
    if depth < 1 or depth >= len(parts):
        return "link does not cover this object"
    if not hmac.compare_digest(_mac(secret, "/".join(parts[:depth]), expires), mac):
        return "link signature does not match"
    if expires < (time.time() if now is None else now):
        return "link expired"
    return None


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
        "Accept-Ranges": "bytes", "Content-Type": info.content_type, "ETag": f'"{info.etag}"',
        # astimezone: S3 reports dateutil's tzutc, which format_datetime's usegmt refuses.
        "Last-Modified": format_datetime(info.modified.astimezone(timezone.utc), usegmt=True),
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
    return StreamingResponse(chunks, status_code=status, headers=headers,
                             background=BackgroundTask(_close, chunks))


async def _close(chunks: object) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def build_media_router(service: EncodeService) -> APIRouter:
    router = APIRouter(tags=["media"])
    secret = link_secret(service.runtime.settings.security.master_encryption_key)

    # Registered before the catch-all `{key:path}` route, which would otherwise match it.
    @router.get(f"{MEDIA_ROUTE}/signed/{{token}}/{{key:path}}",
                summary="Encode output through a signed playback link (no credentials)")
    async def serve_signed(request: Request, token: str, key: str) -> Response:
        if not secret:
            return _error(403, "signed links are disabled: MASTER_ENCRYPTION_KEY is not set")
        reason = check_token(secret, token, key)
        if reason is not None:
            return _error(403, reason)
        return await serve_object(service, request, key)

    @router.get(f"{MEDIA_ROUTE}/{{key:path}}",
                summary="Encode output (playlists, segments, MP4) with byte ranges; viewers")
    async def serve_media(request: Request, key: str, _viewer=Depends(require_viewer)) -> Response:
        return await serve_object(service, request, key)

    # HEAD answers like GET without a body; kept out of the schema, where it would only repeat GET.
    router.add_api_route(f"{MEDIA_ROUTE}/signed/{{token}}/{{key:path}}", serve_signed, methods=["HEAD"],
                         include_in_schema=False)
    router.add_api_route(f"{MEDIA_ROUTE}/{{key:path}}", serve_media, methods=["HEAD"], include_in_schema=False)
    return router


def playback_link(service: EncodeService, prefix: str, key: str) -> tuple[str, int]:
    secret = link_secret(service.runtime.settings.security.master_encryption_key)
    if not secret:
        raise HTTPException(503, "signed links need MASTER_ENCRYPTION_KEY to be set")
    return signed_media_path(secret, prefix, key, service.settings.media_link_ttl.total_seconds())
