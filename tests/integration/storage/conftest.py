"""Fixtures for storage tests: both backends, the S3 one on the session's SeaweedFS
(tests/seaweed.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reelhouse.core.storage.base import Storage
from reelhouse.core.storage.fs import FsStorage
from reelhouse.core.storage.s3 import S3Storage
from tests.seaweed import FS_SIGNING_SECRET, SeaweedS3

__all__ = ["SeaweedS3"]


@pytest.fixture
async def s3_storage(seaweedfs: SeaweedS3) -> AsyncIterator[S3Storage]:
    bucket = seaweedfs.new_bucket()
    storage = seaweedfs.storage(bucket, part_size_mb=5)
    try:
        yield storage
    finally:
        await storage.aclose()
        seaweedfs.drop_bucket(bucket)


@pytest.fixture
def fs_storage(tmp_path: Path) -> FsStorage:
    return FsStorage(tmp_path / "objects", signing_secret=FS_SIGNING_SECRET)


@pytest.fixture(params=["fs", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """The same behavioural tests run against each backend."""
    return request.getfixturevalue(f"{request.param}_storage")
