"""Child process of test_storage_large_objects: one 2 GiB round trip through a backend, alone in
its process, so its peak RSS is the backend's and not whatever else the test process holds.

Prints one JSON line: sizes, both digests, the tail check and the RSS growth over the baseline
taken after imports and client set-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from reelhouse.core.storage import Storage
from reelhouse.core.storage.fs import FsStorage
from reelhouse.core.storage.s3 import S3Storage

CHUNK = 1024 * 1024


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


async def generated(size: int, block: bytes, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    # One random block stamped with the chunk index: incompressible, and a chunk delivered
    # twice or out of order changes the hash.
    for index in range(size // CHUNK):
        chunk = index.to_bytes(8, "little") + block[8:]
        digest.update(chunk)
        yield chunk


def build(spec: dict[str, str]) -> Storage:
    if spec["backend"] == "fs":
        return FsStorage(Path(spec["root"]))
    # Production defaults (16 MB parts, 2 in flight): the memory profile operators get.
    return S3Storage(
        bucket=spec["bucket"],
        endpoint_url=spec["endpoint"],
        access_key_id=spec["access_key"],
        secret_access_key=spec["secret_key"],
    )


async def round_trip(storage: Storage, size: int) -> dict[str, object]:
    key = "vods/huge/source.bin"
    block = os.urandom(CHUNK)
    sent, received = hashlib.sha256(), hashlib.sha256()
    received_bytes = 0
    baseline = peak_rss()
    try:
        info = await storage.put(key, generated(size, block, sent))
        async for chunk in storage.get(key):
            received.update(chunk)
            received_bytes += len(chunk)
        tail = b"".join([c async for c in storage.get(key, (size - 10, size + 100))])
        stat_size = (await storage.stat(key)).size
    finally:
        await storage.delete(key)
        if isinstance(storage, S3Storage):
            await storage.aclose()
    return {
        "put_size": info.size,
        "stat_size": stat_size,
        "received_bytes": received_bytes,
        "sent": sent.hexdigest(),
        "received": received.hexdigest(),
        "tail_matches": tail == block[-10:],
        "rss_growth": peak_rss() - baseline,
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(round_trip(build(spec), int(spec["size"])))))
