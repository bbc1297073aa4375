"""How the S3 backend cuts a source into multipart-upload parts without extra copies."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from reelhouse.core.storage.fs_io import run_blocking


async def file_parts(path: str | os.PathLike[str], part_size: int) -> AsyncGenerator[bytes, None]:
    with open(path, "rb") as file:
        while part := await run_blocking(file.read, part_size):
            yield part


async def stream_parts(source: AsyncIterable[bytes], part_size: int) -> AsyncGenerator[bytearray, None]:
    # Each part is one preallocated buffer filled in place: every byte is copied once, and no
    # join or slice ever holds a second copy of a part.
    part, filled = bytearray(part_size), 0
    async for chunk in source:
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_size - filled)
            part[filled : filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == part_size:
                yield part
                part, filled = bytearray(part_size), 0
    if filled:
        del part[filled:]
        yield part


async def memory_parts(data: bytes | bytearray | memoryview, part_size: int) -> AsyncGenerator[bytes, None]:
    view = memoryview(data)
    for offset in range(0, len(view), part_size):
        yield bytes(view[offset : offset + part_size])


class PartBody(io.RawIOBase):
    """A seekable read-only stream over one part, used as the request body.

    Given `bytes`, botocore wraps them in a BytesIO and aiohttp's BytesIO payload then copies
    the whole buffer (`getbuffer()` unshares it), so each in-flight part would cost twice its
    size. A plain stream is read in 256 KiB pieces instead. `close` keeps the data so that
    botocore can rewind and resend the part on a retry.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = min(max(base + offset, 0), len(self._view))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(self._pos + size, len(self._view))
        data = bytes(self._view[self._pos : end])
        self._pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Deliberately keeps the stream usable: see the class docstring."""


async def prepend(
    first: list[bytes | bytearray], rest: AsyncGenerator[bytes | bytearray, None]
) -> AsyncGenerator[bytes | bytearray, None]:
    # pop() rather than iterate, so parts already handed out are not kept alive by the list.
    while first:
        yield first.pop(0)
    async for part in rest:
        yield part
