"""The storage contract every backend honours, and the rules they share.

Objects are addressed by *keys* (`vods/123/source.mp4`), never by filesystem paths, so the
same code runs on a local disk and on S3. Keys are validated here, once, with the same rules
for every backend: a key that works on S3 but would escape the root on a filesystem is
rejected everywhere, so moving a deployment between backends never changes which keys work.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable
from urllib.parse import quote

CHUNK_SIZE = 1 << 20
"""Default streaming chunk: large enough to amortise syscalls and thread hops, small enough
that many concurrent transfers stay cheap."""

MAX_KEY_BYTES = 1024
"""S3's limit; applied to every backend so keys stay portable."""

RESERVED_SEGMENT_PREFIX = ".rh-partial-"
"""Names the filesystem backend uses for in-progress writes; reserved so no key collides."""

ByteRange = tuple[int, int]
"""`(start, end_inclusive)`, as in HTTP `Range: bytes=start-end`."""

ByteSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncIterable[bytes]
"""What `put` accepts: a local file path, a small in-memory payload, or an async stream."""

_VIDEO_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".vtt": "text/vtt",
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".mpd": "application/dash+xml",
}


class StorageError(Exception):
    """Base of every error a backend raises; messages name the key, never credentials."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key!r}")
        self.key = key


class InvalidKey(StorageError):
    def __init__(self, key: object, reason: str) -> None:
        shown = repr(key)
        if len(shown) > 120:  # keys come from requests; keep hostile input out of long log lines
            shown = shown[:100] + f"...({len(shown)} chars)"
        super().__init__(f"invalid object key {shown}: {reason}")
        self.key = key
        self.reason = reason


class InvalidRange(StorageError):
    """The requested byte range lies outside the object (HTTP 416)."""

    def __init__(self, key: str, byte_range: tuple[int, int | None], size: int | None) -> None:
        where = f"object of {size} bytes" if size is not None else "object"
        super().__init__(f"byte range {byte_range[0]}-{byte_range[1]} is not satisfiable for {where} {key!r}")
        self.key = key
        self.byte_range = byte_range
        self.size = size


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str
    modified: datetime


def validate_key(key: object) -> str:
    """Return `key` if every backend can store it safely, else raise `InvalidKey`.

    Rejecting `.`/`..`/empty segments (not just `..`) keeps keys canonical: `a//b` and
    `a/./b` would name the same file on disk but different objects on S3.
    """
    if not isinstance(key, str):
        raise InvalidKey(key, "must be a string")
    if not key:
        raise InvalidKey(key, "must not be empty")
    if "\x00" in key:
        raise InvalidKey(key, "must not contain NUL bytes")
    if "\\" in key:
        raise InvalidKey(key, "must not contain backslashes (use '/' to separate segments)")
    if key.startswith("/"):
        raise InvalidKey(key, "must be relative (no leading '/')")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidKey(key, "must not contain control characters")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(key, "must be valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(key, f"longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(key, "must not contain empty, '.' or '..' segments")
        if segment.startswith(RESERVED_SEGMENT_PREFIX):
            raise InvalidKey(key, f"segments starting with {RESERVED_SEGMENT_PREFIX!r} are reserved")
    return key


def validate_prefix(prefix: object) -> str:
    """Listing prefixes follow key rules, except that they may be empty or end with '/'."""
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise InvalidKey(prefix, "prefix must be a string")
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def resolve_range(key: str, byte_range: ByteRange | None, size: int) -> tuple[int, int] | None:
    """Turn a requested range into concrete `(start, end_inclusive)` offsets for an object of `size`.

    Like HTTP, an end beyond the object is clamped; a start beyond it is unsatisfiable.
    Returns None for a whole-object read.
    """
    if byte_range is None:
        return None
    start, end = check_range(key, byte_range)
    if start >= size:
        raise InvalidRange(key, byte_range, size)
    return start, min(end, size - 1)


def check_range(key: str, byte_range: ByteRange) -> ByteRange:
    """Reject ranges that are wrong whatever the object's size."""
    try:
        start, end = (int(byte_range[0]), int(byte_range[1]))
    except (TypeError, ValueError, IndexError):
        raise InvalidRange(key, (-1, -1), None) from None
    if start < 0 or end < start:
        raise InvalidRange(key, (start, end), None)
    return start, end


def guess_content_type(key: str) -> str:
    """Content-Type from the key's extension; both backends use it so they always agree."""
    suffix = os.path.splitext(key)[1].lower()
    if suffix in _VIDEO_TYPES:
        return _VIDEO_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"


def content_disposition(download_name: str) -> str:
    """`attachment` header value with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    if not download_name or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in download_name):
        raise StorageError("download name must be non-empty and free of control characters")
    fallback = "".join(ch if ch.isascii() and (ch.isalnum() or ch in " ._-()") else "_" for ch in download_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(download_name, safe='')}"


def ttl_seconds(ttl: timedelta | float | int) -> int:
    seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else int(ttl)
    if seconds <= 0:
        raise StorageError(f"signed URL lifetime must be positive, got {seconds}s")
    return seconds


@runtime_checkable
class Storage(Protocol):
    """An object store. All methods are safe to call concurrently for different keys.

    `get` and `list` return async iterators: key validation happens immediately, while
    errors that need the backend (`ObjectNotFound`, `InvalidRange`) surface on the first
    iteration. Wrap early-abandoned iterators in `contextlib.aclosing` so the underlying
    file or connection is released at once rather than at garbage collection.
    """

    name: str

    async def put(self, key: str, source: ByteSource) -> ObjectInfo:
        """Store `source` under `key`, replacing any previous object atomically.

        `source` is a local file path (`str` or `PathLike`: a `str` is never taken as
        content), an async iterable of bytes, or a small in-memory `bytes` payload. Readers
        see either the old object or the complete new one, never a partial one. Streams and
        files are read piecewise: memory stays bounded whatever the size.
        """
        ...

    def get(self, key: str, byte_range: ByteRange | None = None) -> AsyncGenerator[bytes, None]:
        """Stream the object, or `(start, end_inclusive)` of it."""
        ...

    async def stat(self, key: str) -> ObjectInfo: ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (as on S3)."""
        ...

    def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        """Objects whose key starts with `prefix` (a string prefix, not a directory).

        The filesystem backend and AWS list in key order, but some S3-compatible servers
        (SeaweedFS) group keys by directory: sort the results if order matters.
        """
        ...

    async def signed_url(
        self, key: str, ttl: timedelta | float | None = None, *, download_name: str | None = None
    ) -> str:
        """A URL that lets anyone holding it GET the object until it expires.

        `download_name` asks the server to send `Content-Disposition: attachment`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the storage must not be used afterwards."""
        ...
