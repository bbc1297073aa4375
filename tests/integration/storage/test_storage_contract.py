"""Behaviour every backend must share; each test runs against the filesystem and SeaweedFS S3."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reelhouse.core.storage import InvalidKey, InvalidRange, ObjectNotFound, Storage


async def read_all(storage: Storage, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
    return b"".join([chunk async for chunk in storage.get(key, byte_range)])


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def test_round_trip_from_bytes_stream_and_file(storage: Storage, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB read chunks
    source_file = tmp_path / "source.bin"
    source_file.write_bytes(payload[::-1])

    await storage.put("vods/1/small.txt", b"hello")
    streamed = await storage.put("vods/1/streamed.bin", chunked(payload, 64 * 1024 + 3))
    from_file = await storage.put("vods/1/from-file.bin", source_file)

    assert await read_all(storage, "vods/1/small.txt") == b"hello"
    assert await read_all(storage, "vods/1/streamed.bin") == payload
    assert await read_all(storage, "vods/1/from-file.bin") == payload[::-1]
    assert streamed.size == len(payload) and from_file.size == len(payload)


async def test_multipart_sized_stream_round_trips(storage: Storage) -> None:
    # Larger than the 5 MB part size the S3 fixture uses, with an uneven tail part.
    payload = os.urandom(12 * 1024 * 1024 + 12345)
    info = await storage.put("big/object.bin", chunked(payload, 1_000_003))
    assert info.size == len(payload)
    digest = hashlib.sha256()
    async for chunk in storage.get("big/object.bin"):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert (await storage.stat("big/object.bin")).etag == info.etag


async def test_empty_object(storage: Storage) -> None:
    info = await storage.put("empty.txt", chunked(b"", 10))
    assert info.size == 0
    assert await read_all(storage, "empty.txt") == b""
    with pytest.raises(InvalidRange):
        await read_all(storage, "empty.txt", (0, 0))


async def test_put_replaces_previous_object(storage: Storage) -> None:
    first = await storage.put("clip.mp4", b"first version")
    second = await storage.put("clip.mp4", b"the second, longer version")
    assert await read_all(storage, "clip.mp4") == b"the second, longer version"
    assert second.etag != first.etag
    assert (await storage.stat("clip.mp4")).size == len(b"the second, longer version")


async def test_stat_reports_size_type_etag_and_time(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    put_info = await storage.put("hls/720p/index.m3u8", b"#EXTM3U\n")
    info = await storage.stat("hls/720p/index.m3u8")
    assert info.key == "hls/720p/index.m3u8"
    assert info.size == 8
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert info.etag and info.etag == put_info.etag
    assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=5)
    for key, expected in [
        ("seg/00001.ts", "video/mp2t"),
        ("seg/init.m4s", "video/iso.segment"),
        ("subs/en.vtt", "text/vtt"),
    ]:
        await storage.put(key, b"x")
        assert (await storage.stat(key)).content_type == expected


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [((0, 0), b"0"), ((5, 9), b"56789"), ((30, 35), b"UVWXYZ"), ((30, 10_000), b"UVWXYZ"), ((0, 35), None)],
)
async def test_range_reads(storage: Storage, byte_range: tuple[int, int], expected: bytes | None) -> None:
    data = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    await storage.put("range.bin", data)
    assert await read_all(storage, "range.bin", byte_range) == (expected if expected is not None else data)


async def test_range_across_chunk_boundaries(storage: Storage) -> None:
    data = os.urandom(3 * 1024 * 1024)
    await storage.put("wide.bin", data)
    start, end = 1024 * 1024 - 10, 2 * 1024 * 1024 + 10
    assert await read_all(storage, "wide.bin", (start, end)) == data[start : end + 1]


@pytest.mark.parametrize("bad_range", [(36, 40), (100, 200), (-1, 3), (5, 4)])
async def test_unsatisfiable_ranges_raise(storage: Storage, bad_range: tuple[int, int]) -> None:
    await storage.put("range.bin", b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    with pytest.raises(InvalidRange):
        await read_all(storage, "range.bin", bad_range)


async def test_missing_objects_raise_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as excinfo:
        await storage.stat("nope/missing.mp4")
    assert "nope/missing.mp4" in str(excinfo.value)
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/missing.mp4")
    with pytest.raises(ObjectNotFound):
        await read_all(storage, "nope/missing.mp4", (0, 10))


async def test_delete_removes_and_is_idempotent(storage: Storage) -> None:
    await storage.put("a/b/c.txt", b"x")
    await storage.put("a/keep.txt", b"y")
    await storage.delete("a/b/c.txt")
    with pytest.raises(ObjectNotFound):
        await storage.stat("a/b/c.txt")
    await storage.delete("a/b/c.txt")
    await storage.delete("never/existed")
    assert await listed_keys(storage, "") == ["a/keep.txt"]
    # A prefix emptied by deletes can be written again.
    await storage.put("a/b/c.txt", b"again")
    assert await read_all(storage, "a/b/c.txt") == b"again"


async def listed_keys(storage: Storage, prefix: str) -> list[str]:
    keys = [o.key async for o in storage.list(prefix)]
    assert len(keys) == len(set(keys)), "a key was listed twice"
    return sorted(keys)


async def test_list_is_a_string_prefix(storage: Storage) -> None:
    keys = ["a/1", "a/2/x.ts", "a-b", "ab/c", "b", "a/10"]
    for key in keys:
        await storage.put(key, key.encode())
    assert await listed_keys(storage, "") == sorted(keys)
    assert await listed_keys(storage, "a/") == ["a/1", "a/10", "a/2/x.ts"]
    assert await listed_keys(storage, "a/1") == ["a/1", "a/10"]
    assert await listed_keys(storage, "a") == ["a-b", "a/1", "a/10", "a/2/x.ts", "ab/c"]
    assert await listed_keys(storage, "zzz/") == []
    listed = {o.key: o async for o in storage.list("a/2/")}
    assert listed["a/2/x.ts"].size == len(b"a/2/x.ts")
    assert listed["a/2/x.ts"].content_type == "video/mp2t"


async def test_list_beyond_one_page(storage: Storage) -> None:
    # S3 returns at most 1000 keys per ListObjectsV2 page; 1100 forces a continuation token.
    keys = [f"many/{i:05d}.ts" for i in range(1100)]
    limit = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with limit:
            await storage.put(key, b"s")

    await asyncio.gather(*(put(key) for key in keys))
    await storage.put("other/x", b"o")
    assert await listed_keys(storage, "many/") == keys


async def test_abandoned_iterators_can_be_closed(storage: Storage) -> None:
    await storage.put("long.bin", os.urandom(3 * 1024 * 1024))
    async with contextlib.aclosing(storage.get("long.bin")) as chunks:
        first = await anext(chunks)
    assert first
    # The backend is still usable after a partial read (connections/files released).
    assert len(await read_all(storage, "long.bin", (0, 99))) == 100


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../escape",
    "a/./b",
    "a//b",
    "trailing/",
    "nul\x00byte",
    "back\\slash",
    "..\\windows",
    "new\nline",
    ".rh-partial-abc",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_rejected_everywhere(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, b"x")
    with pytest.raises(InvalidKey):
        storage.get(key)
    with pytest.raises(InvalidKey):
        await storage.stat(key)
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    with pytest.raises(InvalidKey):
        await storage.signed_url(key, 60)
    assert [o.key async for o in storage.list("")] == []


async def test_failed_stream_keeps_previous_version(storage: Storage) -> None:
    await storage.put("vod.mp4", b"complete old version")

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(6 * 1024 * 1024)  # past one S3 part, so a multipart upload is in flight
        yield os.urandom(6 * 1024 * 1024)
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        await storage.put("vod.mp4", broken())
    assert await read_all(storage, "vod.mp4") == b"complete old version"
    with pytest.raises(ConnectionResetError):
        await storage.put("fresh.mp4", broken())
    with pytest.raises(ObjectNotFound):
        await storage.stat("fresh.mp4")
    assert [o.key async for o in storage.list("")] == ["vod.mp4"]
