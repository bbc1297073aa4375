"""S3-only behaviour against SeaweedFS: multipart cleanup, signing, settings wiring."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reelhouse.config import Settings
from reelhouse.core.storage import ObjectNotFound, StorageError, open_storage
from reelhouse.core.storage.s3 import S3Storage

if TYPE_CHECKING:
    from conftest import SeaweedS3

PART = 5 * 1024 * 1024


def open_uploads(seaweedfs: SeaweedS3, bucket: str) -> list[str]:
    listing = seaweedfs.admin_client().list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


async def read_all(storage: S3Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.get(key)])


async def test_failed_multipart_upload_is_aborted(seaweedfs: SeaweedS3, s3_storage: S3Storage) -> None:
    seen_in_progress: list[list[str]] = []

    async def fails_after_three_parts() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield os.urandom(PART)
        # Give the in-flight part uploads time to land, then look from the outside.
        await asyncio.sleep(0.5)
        seen_in_progress.append(await asyncio.to_thread(open_uploads, seaweedfs, s3_storage.bucket))
        raise OSError("disk read error")

    with pytest.raises(OSError, match="disk read error"):
        await s3_storage.put("vods/broken.mp4", fails_after_three_parts())
    assert seen_in_progress == [["vods/broken.mp4"]]
    assert open_uploads(seaweedfs, s3_storage.bucket) == []
    with pytest.raises(ObjectNotFound):
        await s3_storage.stat("vods/broken.mp4")


async def test_cancelled_multipart_upload_is_aborted(seaweedfs: SeaweedS3, s3_storage: S3Storage) -> None:
    two_parts_read = asyncio.Event()

    async def slow_source() -> AsyncIterator[bytes]:
        for index in range(100):
            yield os.urandom(PART)
            if index == 2:
                two_parts_read.set()
                await asyncio.sleep(3600)

    task = asyncio.create_task(s3_storage.put("vods/cancelled.mp4", slow_source()))
    await two_parts_read.wait()
    await asyncio.sleep(0.3)
    assert open_uploads(seaweedfs, s3_storage.bucket) == ["vods/cancelled.mp4"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_uploads(seaweedfs, s3_storage.bucket) == []


async def test_file_source_uses_multipart(s3_storage: S3Storage, tmp_path: Path) -> None:
    data = os.urandom(2 * PART + 1234)
    source = tmp_path / "upload.mp4"
    source.write_bytes(data)
    info = await s3_storage.put("from/file.mp4", source)
    # S3 marks multipart ETags with "-<part count>"; a single PUT has a plain MD5.
    assert info.etag.endswith("-3")
    assert info.size == len(data)
    assert await read_all(s3_storage, "from/file.mp4") == data


async def test_wrong_secret_is_a_signing_error_without_leaking_it(seaweedfs: SeaweedS3) -> None:
    wrong = "not-the-secret-" + "x" * 20
    storage = seaweedfs.storage(secret_access_key=wrong)
    try:
        with pytest.raises(StorageError) as excinfo:
            await storage.stat("anything")
        assert not isinstance(excinfo.value, ObjectNotFound)
        with pytest.raises(StorageError) as put_error:
            await storage.put("anything", b"x")
    finally:
        await storage.aclose()
    for error in (excinfo.value, put_error.value):
        assert wrong not in str(error) and wrong not in repr(error)
    assert wrong not in repr(storage)


async def test_missing_bucket_is_reported_clearly(seaweedfs: SeaweedS3) -> None:
    storage = seaweedfs.storage("no-such-bucket-here")
    try:
        with pytest.raises(StorageError, match="no-such-bucket-here"):
            await storage.put("a.txt", b"x")
    finally:
        await storage.aclose()


async def test_list_skips_keys_reelhouse_cannot_address(seaweedfs: SeaweedS3, s3_storage: S3Storage) -> None:
    seaweedfs.admin_client().put_object(Bucket=s3_storage.bucket, Key="uploads/.rh-partial-0123", Body=b"x")
    await s3_storage.put("fine.txt", b"y")
    assert [o.key async for o in s3_storage.list("")] == ["fine.txt"]


async def test_open_storage_builds_s3_from_settings(seaweedfs: SeaweedS3, tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    settings = Settings(
        server={"DATA_DIR": str(tmp_path)},
        storage={
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT": seaweedfs.endpoint,
            "S3_BUCKET": bucket,
            "S3_ACCESS_KEY_ID": seaweedfs.access_key,
            "S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
            "S3_MULTIPART_CHUNK_MB": "7",
        },
    )
    storage = open_storage(settings)
    try:
        assert isinstance(storage, S3Storage)
        assert storage.part_size == 7 * 1024 * 1024
        await storage.put("from-settings.txt", b"configured")
        assert await read_all(storage, "from-settings.txt") == b"configured"
    finally:
        await storage.aclose()
        seaweedfs.drop_bucket(bucket)
