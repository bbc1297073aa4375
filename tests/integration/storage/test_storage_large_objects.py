"""A 2 GiB object streams through each backend without the test process growing by 200 MB."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from reelhouse.core.storage import Storage
from reelhouse.core.storage.fs import FsStorage

if TYPE_CHECKING:
    from conftest import SeaweedS3

SIZE = 2 * 1024**3
CHUNK = 1024 * 1024
MAX_RSS_GROWTH = 200 * 1024 * 1024


class PeakRss:
    """Samples this process's RSS in a thread, so short peaks between awaits are seen too."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = 0
        self.peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def generated(size: int, block: bytes, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    # One random block stamped with the chunk index: incompressible, and a chunk delivered
    # twice or out of order changes the hash.
    for index in range(size // CHUNK):
        chunk = index.to_bytes(8, "little") + block[8:]
        digest.update(chunk)
        yield chunk


@pytest.fixture(params=["fs", "s3"])
async def big_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "fs":
        yield FsStorage(tmp_path / "objects")
        return
    seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
    bucket = seaweedfs.new_bucket()
    # Production defaults (16 MB parts, 2 in flight): the memory profile operators get.
    storage = seaweedfs.storage(bucket)
    try:
        yield storage
    finally:
        await storage.aclose()
        seaweedfs.drop_bucket(bucket)


@pytest.mark.slow
async def test_two_gib_round_trip_in_bounded_memory(big_storage: Storage) -> None:
    key = "vods/huge/source.bin"
    block = os.urandom(CHUNK)
    sent, received = hashlib.sha256(), hashlib.sha256()
    received_bytes = 0
    try:
        with PeakRss() as rss:
            info = await big_storage.put(key, generated(SIZE, block, sent))
            async for chunk in big_storage.get(key):
                received.update(chunk)
                received_bytes += len(chunk)
            tail = b"".join([c async for c in big_storage.get(key, (SIZE - 10, SIZE + 100))])

        assert info.size == SIZE
        assert (await big_storage.stat(key)).size == SIZE
        assert received_bytes == SIZE
        assert received.hexdigest() == sent.hexdigest()
        assert tail == block[-10:]  # offsets past 2**31 address the right bytes
        assert rss.growth < MAX_RSS_GROWTH, f"RSS grew by {rss.growth / 2**20:.0f} MiB"
    finally:
        await big_storage.delete(key)
