"""HTTP serving of filesystem-backend objects behind signed, expiring URLs.

With S3 the client fetches presigned URLs from the bucket directly; with the filesystem backend
reelhouse is the server, so this router gives players what they expect from S3 or nginx:
exact Content-Type for HLS/DASH pieces, single byte ranges (seeking), ETag/Last-Modified.
"""

from __future__ import annotations

import re
from email.utils import format_datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from reelhouse.core.storage.base import InvalidKey, InvalidRange, ObjectNotFound, StorageError, content_disposition
from reelhouse.core.storage.fs import FsStorage
from reelhouse.core.storage.signing import SignatureInvalid

_BYTES_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range_header(header: str | None, size: int) -> tuple[int, int] | None:
    """`(start, end_inclusive)` for a single satisfiable range, None to send the whole object.

    Multiple ranges and malformed headers are ignored (RFC 9110 lets a server do so), which
    answers with the full object; a well-formed range outside the object raises InvalidRange.
    """
    if not header:
        return None
    match = _BYTES_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(0) == "bytes=-":
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None  # syntactically invalid, so ignored rather than unsatisfiable
    else:
        suffix = int(last)
        start, end = max(size - suffix, 0), size - 1
        if suffix == 0:
            raise InvalidRange("", (0, -1), size)
    if start >= size:
        raise InvalidRange("", (start, end), size)
    return start, min(end, size - 1)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def signed_object_router(storage: FsStorage) -> APIRouter:
    """Routes `GET|HEAD {storage.url_prefix}/{key}?exp=..&sig=..[&dl=..]` as made by `storage.signed_url`."""
    router = APIRouter()

    @router.api_route(f"{storage.url_prefix}/{{key:path}}", methods=["GET", "HEAD"], include_in_schema=False)
    async def serve_signed_object(
        request: Request, key: str, exp: str = "", sig: str = "", dl: str | None = None
    ) -> Response:
        if not exp or not sig:
            return _error(403, "signed URL rejected: missing exp or sig parameter")
        try:
            storage.verify_signed(key, exp, sig, download_name=dl)
        except SignatureInvalid as exc:
            return _error(403, str(exc))
        except StorageError:
            return _error(403, "signed URLs are not enabled on this server")
        try:
            reader = await storage.open_reader(key)
        except (ObjectNotFound, InvalidKey):
            # A symlinked key is as absent as a missing one; saying more would map the tree.
            return _error(404, "object not found")

        info = reader.info
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Type": info.content_type,
            "ETag": f'"{info.etag}"',
            "Last-Modified": format_datetime(info.modified, usegmt=True),
            "Cache-Control": "private",
        }
        if dl:
            headers["Content-Disposition"] = content_disposition(dl)
        try:
            span = parse_range_header(request.headers.get("range"), info.size)
        except InvalidRange:
            reader.close()
            return _error(416, "requested range not satisfiable", {"Content-Range": f"bytes */{info.size}"})

        status = 200
        length = info.size
        if span is not None:
            status = 206
            length = span[1] - span[0] + 1
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            reader.close()
            return Response(status_code=status, headers=headers)
        # The reader closes itself when fully streamed; the background task covers a client
        # that hangs up early, and the file object's finaliser anything that slips past both.
        return StreamingResponse(
            reader.chunks(span), status_code=status, headers=headers, background=BackgroundTask(reader.close)
        )

    return router
