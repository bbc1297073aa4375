"""Cutting sources into multipart parts, and the request body that carries a part."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator

import pytest

from reelhouse.core.storage.s3_parts import PartBody, memory_parts, prepend, stream_parts


async def chunks_of(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    offset = 0
    for size in sizes:
        yield data[offset : offset + size]
        offset += size


@pytest.mark.parametrize("sizes", [[7] * 10, [1, 30, 2, 37], [70], [10, 10, 10, 10, 10, 10, 10]])
async def test_stream_parts_are_full_except_the_last(sizes: list[int]) -> None:
    data = os.urandom(sum(sizes))
    parts = [bytes(p) async for p in stream_parts(chunks_of(data, sizes), 16)]
    assert b"".join(parts) == data
    assert all(len(p) == 16 for p in parts[:-1])
    assert 0 < len(parts[-1]) <= 16


async def test_empty_stream_has_no_parts() -> None:
    assert [p async for p in stream_parts(chunks_of(b"", [0, 0]), 16)] == []


async def test_memory_parts_and_prepend() -> None:
    data = os.urandom(40)
    parts = memory_parts(data, 16)
    first = await anext(parts)
    rest = [p async for p in prepend([first], parts)]
    assert [len(p) for p in rest] == [16, 16, 8]
    assert b"".join(rest) == data


def test_part_body_is_rewindable_after_close() -> None:
    body = PartBody(bytearray(b"0123456789"))
    assert body.read(4) == b"0123"
    assert body.seek(0, io.SEEK_END) == 10
    assert body.read(4) == b""
    body.close()  # aiohttp closes payloads; a botocore retry then seeks back and resends
    assert body.seek(2) == 2
    buffer = bytearray(5)
    assert body.readinto(buffer) == 5 and buffer == b"23456"
    assert body.read() == b"789"
