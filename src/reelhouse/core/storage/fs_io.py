"""Blocking file I/O for the filesystem backend, run in worker threads without leaking descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, TypeVar

from reelhouse.core.storage.base import ByteRange, ObjectInfo, StorageError, resolve_range

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: Any, discard: Callable[[T], None] | None = None) -> T:
    """Run `fn` in a thread and, if cancelled, still wait for it to finish.

    The callers hand descriptors to the thread; returning early on cancellation would let the
    caller close a descriptor the thread is still writing to (and a reused fd number could
    then receive another file's data). `discard` releases a result nobody will receive.
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled() and future.exception() is None and discard is not None:
            discard(future.result())
        raise


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_file(src_path: str | os.PathLike[str], dst_fd: int, chunk_size: int) -> None:
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(src_path, "rb", buffering=0) as src:
        while n := src.readinto(buffer):
            write_all(dst_fd, view[:n])


def take(iterator: Iterator[T], count: int) -> list[T]:
    batch = []
    for item in iterator:
        batch.append(item)
        if len(batch) == count:
            break
    return batch


class FsReader:
    """One opened version of an object: `info` describes exactly the bytes `chunks` yields."""

    def __init__(self, info: ObjectInfo, file: io.FileIO, chunk_size: int) -> None:
        self.info = info
        self._file = file
        self._chunk_size = chunk_size

    async def chunks(self, byte_range: ByteRange | None = None) -> AsyncGenerator[bytes, None]:
        """Stream the object (or a range of it), then close the reader."""
        try:
            span = resolve_range(self.info.key, byte_range, self.info.size)
            offset, end = span if span is not None else (0, self.info.size - 1)
            fd = self._file.fileno()
            while offset <= end:
                chunk = await run_blocking(os.pread, fd, min(self._chunk_size, end - offset + 1), offset)
                if not chunk:
                    raise StorageError(f"{self.info.key!r} was truncated while being read")
                offset += len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()
