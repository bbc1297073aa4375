"""Filesystem backend: keys cannot reach outside the root, and writes are atomic even under SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reelhouse.core.storage import InvalidKey, ObjectNotFound, StorageError
from reelhouse.core.storage.base import RESERVED_SEGMENT_PREFIX
from reelhouse.core.storage.fs import FsStorage


async def read_all(storage: FsStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.get(key)])


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(RESERVED_SEGMENT_PREFIX)]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_bytes(b"do not leak")
    return secret_dir


async def test_symlinked_directory_escaping_root_is_refused(fs_storage: FsStorage, outside: Path) -> None:
    (fs_storage.root / "escape").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey, match="symbolic link"):
        await fs_storage.stat("escape/secret.txt")
    with pytest.raises(InvalidKey):
        await read_all(fs_storage, "escape/secret.txt")
    with pytest.raises(InvalidKey):
        await fs_storage.put("escape/planted.txt", b"written outside?")
    with pytest.raises(InvalidKey):
        await fs_storage.delete("escape/secret.txt")
    with pytest.raises(InvalidKey):
        fs_storage.local_path("escape/secret.txt")
    with pytest.raises(InvalidKey):
        [o async for o in fs_storage.list("escape/")]

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"do not leak"
    assert [o.key async for o in fs_storage.list("")] == []


async def test_symlinked_file_is_neither_read_nor_replaced_nor_deleted(fs_storage: FsStorage, outside: Path) -> None:
    await fs_storage.put("media/real.mp4", b"real")
    link = fs_storage.root / "media" / "link.mp4"
    link.symlink_to(outside / "secret.txt")

    with pytest.raises(InvalidKey):
        await fs_storage.stat("media/link.mp4")
    with pytest.raises(InvalidKey):
        await read_all(fs_storage, "media/link.mp4")
    with pytest.raises(InvalidKey):
        await fs_storage.put("media/link.mp4", b"overwrite target?")
    with pytest.raises(InvalidKey):
        await fs_storage.delete("media/link.mp4")

    assert link.is_symlink()
    assert (outside / "secret.txt").read_bytes() == b"do not leak"
    assert [o.key async for o in fs_storage.list("")] == ["media/real.mp4"]
    assert partial_files(fs_storage.root) == []


async def test_links_inside_the_root_are_not_followed_either(fs_storage: FsStorage) -> None:
    await fs_storage.put("real/a.txt", b"a")
    (fs_storage.root / "alias").symlink_to(fs_storage.root / "real", target_is_directory=True)
    with pytest.raises(InvalidKey):
        await fs_storage.stat("alias/a.txt")
    assert [o.key async for o in fs_storage.list("")] == ["real/a.txt"]


async def test_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "objects").symlink_to(tmp_path / "disk", target_is_directory=True)
    storage = FsStorage(tmp_path / "objects")
    await storage.put("x/y.bin", b"data")
    assert (tmp_path / "disk" / "x" / "y.bin").read_bytes() == b"data"
    assert storage.local_path("x/y.bin") == tmp_path / "disk" / "x" / "y.bin"


async def test_object_and_prefix_with_the_same_name_conflict_clearly(fs_storage: FsStorage) -> None:
    await fs_storage.put("vods/1", b"object")
    with pytest.raises(StorageError, match="already an object"):
        await fs_storage.put("vods/1/chat.json", b"{}")
    await fs_storage.put("clips/2/a.mp4", b"a")
    with pytest.raises(StorageError, match="already a prefix"):
        await fs_storage.put("clips/2", b"object")
    with pytest.raises(ObjectNotFound):
        await fs_storage.stat("clips/2")
    assert partial_files(fs_storage.root) == []


async def test_reader_keeps_the_version_it_opened(fs_storage: FsStorage) -> None:
    old = os.urandom(3 * 1024 * 1024)
    await fs_storage.put("live.ts", old)
    reader = await fs_storage.open_reader("live.ts")
    chunks = reader.chunks()
    first = await anext(chunks)
    await fs_storage.put("live.ts", b"new and short")
    rest = b"".join([c async for c in chunks])
    assert first + rest == old
    assert await read_all(fs_storage, "live.ts") == b"new and short"


def files_open_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{root.resolve()}/"):
                found.append(target)
    return found


async def test_cancelled_put_leaves_no_partial_and_no_open_files(fs_storage: FsStorage) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            started.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(fs_storage.put("stream.bin", endless()))
    await started.wait()
    await asyncio.sleep(0.05)
    assert files_open_under(fs_storage.root), "the put holds no file open: nothing is tested"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert partial_files(fs_storage.root) == []
    # Only descriptors of files under the storage root: the process's count moves with what
    # other fixtures and the garbage collector close meanwhile.
    assert files_open_under(fs_storage.root) == []
    with pytest.raises(ObjectNotFound):
        await fs_storage.stat("stream.bin")


CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from reelhouse.core.storage.fs import FsStorage

    async def stream():
        for i in range(10_000):
            yield bytes([i % 256]) * (1 << 20)
            if i == 8:
                print("writing", flush=True)
            await asyncio.sleep(0.01)

    asyncio.run(FsStorage(sys.argv[1]).put("vods/crash.mp4", stream()))
    """
)


async def test_sigkill_during_put_never_exposes_a_partial_object(fs_storage: FsStorage) -> None:
    await fs_storage.put("vods/crash.mp4", b"previous complete version")
    writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(fs_storage.root)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        line = await asyncio.to_thread(writer.stdout.readline)
        assert line.strip() == b"writing"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)

    leftovers = partial_files(fs_storage.root)
    assert leftovers, "the writer should have died with its temporary file on disk"
    assert leftovers[0].stat().st_size >= 8 << 20
    assert await read_all(fs_storage, "vods/crash.mp4") == b"previous complete version"
    assert [o.key async for o in fs_storage.list("")] == ["vods/crash.mp4"]
