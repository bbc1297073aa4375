# Over 400 lines: one backend whose parts share the dir-fd walk (I/O helpers are in fs_io.py).
"""Local filesystem backend: objects are files under one root directory.

Containment does not rely on string checks alone. Every access walks the key one segment at
a time with `openat(..., O_NOFOLLOW)` from a descriptor of the root, so a symbolic link
anywhere under the root (planted before or during the call) is refused instead of followed:
the path actually opened is always inside the root. Writes go to a reserved temporary name
in the target directory, are fsynced and then renamed over the key, so readers and crashes
only ever see a complete object.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import stat as statmod
import time
from collections.abc import AsyncGenerator, AsyncIterable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from reelhouse.core.storage.base import (
    CHUNK_SIZE,
    RESERVED_SEGMENT_PREFIX,
    ByteRange,
    ByteSource,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_range,
    content_disposition,
    guess_content_type,
    ttl_seconds,
    validate_key,
    validate_prefix,
)
from reelhouse.core.storage.fs_io import FsReader, copy_file, run_blocking, take, write_all
from reelhouse.core.storage.signing import derive_signing_secret, sign, verify_signed

if TYPE_CHECKING:
    from reelhouse.config import Settings

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_BATCH = 256


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    # A content hash would need a full read per stat; inode + mtime + size changes whenever the
    # object is replaced (every put is a new inode), and hashing hides the inode number.
    fingerprint = f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=hashlib.blake2b(fingerprint, digest_size=16).hexdigest(),
        content_type=guess_content_type(key),
        modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
    )


class FsStorage:
    """Objects under `root`. Signed URLs need `signing_secret` and the router from `signed_routes`."""

    name = "fs"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        signing_secret: bytes | None = None,
        url_prefix: str = "/files",
        public_base_url: str = "",
        default_ttl: timedelta = timedelta(hours=1),
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        root_path = Path(root)
        root_path.mkdir(parents=True, exist_ok=True)
        # Resolved once: the root itself may be a symlink (e.g. to a big disk), its contents may not.
        self.root = root_path.resolve(strict=True)
        self.url_prefix = "/" + url_prefix.strip("/")
        self.public_base_url = public_base_url.rstrip("/")
        self.default_ttl = default_ttl
        self.chunk_size = chunk_size
        self._secret = signing_secret or b""

    def __repr__(self) -> str:
        return f"FsStorage(root={str(self.root)!r})"

    # -- descriptor walking (blocking; always called through run_blocking) -----------------

    def _open_dirs(self, key: str, dirs: list[str], *, create: bool) -> list[int]:
        """Descriptors of root and each directory in `dirs`, opened without following links."""
        fds = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        try:
            for depth, part in enumerate(dirs):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fds[-1])
                try:
                    fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                except NotADirectoryError:
                    # O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR; tell the two apart.
                    self._reject_link(key, part, fds[-1])
                    if create:
                        taken = "/".join(dirs[: depth + 1])
                        raise StorageError(
                            f"cannot store {key!r}: {taken!r} is already an object, and the filesystem "
                            "backend cannot hold an object and a prefix with the same name"
                        ) from None
                    raise
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    @staticmethod
    def _reject_link(key: str, name: str, dir_fd: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            if statmod.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise InvalidKey(key, f"{name!r} is a symbolic link; links under the storage root are never followed")

    def _lookup(self, key: str) -> tuple[int, str]:
        """Descriptor of the key's directory and its last segment; ObjectNotFound if no such directory."""
        *dirs, name = key.split("/")
        try:
            fds = self._open_dirs(key, dirs, create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        for fd in fds[:-1]:
            os.close(fd)
        return fds[-1], name

    def _open_for_read(self, key: str) -> FsReader:
        dir_fd, name = self._lookup(key)
        try:
            # O_NONBLOCK: opening a FIFO someone placed under the root must not hang the thread.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._reject_link(key, name, dir_fd)
            raise
        finally:
            os.close(dir_fd)
        # FileIO owns the descriptor, so a reader that is dropped unread still closes it.
        file = io.FileIO(fd, "rb", closefd=True)
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            file.close()
            raise ObjectNotFound(key)
        return FsReader(_info(key, st), file, self.chunk_size)

    def _stat(self, key: str) -> ObjectInfo:
        dir_fd, name = self._lookup(key)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        finally:
            os.close(dir_fd)
        if statmod.S_ISLNK(st.st_mode):
            raise InvalidKey(key, "it is a symbolic link; links under the storage root are never followed")
        if not statmod.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return _info(key, st)

    def _create_partial(self, key: str) -> tuple[int, str, int, str]:
        *dirs, name = key.split("/")
        # A concurrent delete may prune an emptied directory between our mkdir and the
        # create below; creating again re-makes it.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        attempts = 5
        while True:
            attempts -= 1
            try:
                fds = self._open_dirs(key, dirs, create=True)
            except FileNotFoundError:
                if not attempts:
                    raise
                continue
            for fd in fds[:-1]:
                os.close(fd)
            dir_fd = fds[-1]
            partial = f"{RESERVED_SEGMENT_PREFIX}{secrets.token_hex(8)}"
            try:
                return dir_fd, name, os.open(partial, flags, 0o666, dir_fd=dir_fd), partial
            except FileNotFoundError:
                os.close(dir_fd)
                if not attempts:
                    raise

    @staticmethod
    def _abandon_partial(created: tuple[int, str, int, str]) -> None:
        dir_fd, _name, fd, partial = created
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=dir_fd)
        os.close(dir_fd)

    def _commit(self, key: str, dir_fd: int, partial: str, name: str) -> ObjectInfo:
        # Renaming over a link would be harmless (it replaces the link, never its target), but
        # refusing keeps one rule for every operation: links under the root are not touched.
        self._reject_link(key, name, dir_fd)
        try:
            os.rename(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            raise StorageError(
                f"cannot store {key!r}: it is already a prefix of other objects, and the filesystem "
                "backend cannot hold an object and a prefix with the same name"
            ) from None
        # The rename is durable only once the directory entry itself is on disk.
        os.fsync(dir_fd)
        return _info(key, os.stat(name, dir_fd=dir_fd, follow_symlinks=False))

    def _delete(self, key: str) -> None:
        *dirs, name = key.split("/")
        try:
            fds = self._open_dirs(key, dirs, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            try:
                if statmod.S_ISLNK(os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_mode):
                    raise InvalidKey(key, "it is a symbolic link; links under the storage root are never followed")
                os.unlink(name, dir_fd=fds[-1])
            except (FileNotFoundError, IsADirectoryError):
                return  # no object under this key: deleting is idempotent
            # Prune directories the delete emptied, so retention does not leave a tree of
            # empty folders behind; stop at the first one still in use.
            for depth in range(len(dirs) - 1, -1, -1):
                try:
                    os.rmdir(dirs[depth], dir_fd=fds[depth])
                except OSError:
                    break
        finally:
            for fd in fds:
                os.close(fd)

    def _walk(self, prefix: str) -> Generator[ObjectInfo, None, None]:
        base = prefix.rpartition("/")[0]
        dirs = base.split("/") if base else []
        try:
            fds = self._open_dirs(prefix, dirs, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        for fd in fds[:-1]:
            os.close(fd)
        yield from self._walk_dir(fds[-1], f"{base}/" if base else "", prefix)

    def _walk_dir(self, dir_fd: int, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        """Yield objects in key order: a directory sorts as its name plus '/', as its keys do."""
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in it)
            for sort_name, entry in entries:
                key = rel + sort_name
                if entry.name.startswith(RESERVED_SEGMENT_PREFIX) or entry.is_symlink():
                    continue
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if sort_name.endswith("/"):
                    try:
                        sub_fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                    except OSError:
                        continue  # replaced or removed since scandir
                    yield from self._walk_dir(sub_fd, key, prefix)
                elif entry.is_file(follow_symlinks=False):
                    try:
                        validate_key(key)
                        st = entry.stat(follow_symlinks=False)
                    except (InvalidKey, FileNotFoundError):
                        continue  # files no key can name were not written by us
                    yield _info(key, st)
        finally:
            os.close(dir_fd)

    # -- Storage protocol ------------------------------------------------------------------

    async def put(self, key: str, source: ByteSource) -> ObjectInfo:
        validate_key(key)
        dir_fd, name, fd, partial = await run_blocking(self._create_partial, key, discard=self._abandon_partial)
        try:
            try:
                if isinstance(source, (bytes, bytearray, memoryview)):
                    await run_blocking(write_all, fd, source)
                elif isinstance(source, (str, os.PathLike)):
                    await run_blocking(copy_file, source, fd, self.chunk_size)
                elif isinstance(source, AsyncIterable):
                    await self._write_stream(fd, source)
                else:
                    raise TypeError(
                        f"put() source must be a path, bytes or an async iterable, not {type(source).__name__}"
                    )
                await run_blocking(os.fsync, fd)
            finally:
                os.close(fd)
            return await run_blocking(self._commit, key, dir_fd, partial, name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial, dir_fd=dir_fd)
            raise
        finally:
            os.close(dir_fd)

    async def _write_stream(self, fd: int, source: AsyncIterable[bytes]) -> None:
        # Coalesce small chunks (network reads are often 64 KiB) so we hop to a thread per MiB.
        pending = bytearray()
        async for chunk in source:
            pending += chunk
            if len(pending) >= self.chunk_size:
                await run_blocking(write_all, fd, pending)
                pending = bytearray()
        if pending:
            await run_blocking(write_all, fd, pending)

    def get(self, key: str, byte_range: ByteRange | None = None) -> AsyncGenerator[bytes, None]:
        validate_key(key)
        if byte_range is not None:
            check_range(key, byte_range)
        return self._read(key, byte_range)

    async def _read(self, key: str, byte_range: ByteRange | None) -> AsyncGenerator[bytes, None]:
        reader = await self.open_reader(key)
        async with contextlib.aclosing(reader.chunks(byte_range)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def open_reader(self, key: str) -> FsReader:
        """Open the object once, so its metadata and its bytes are from the same version
        even if a put replaces the key meanwhile (HTTP serving needs both to agree)."""
        validate_key(key)
        return await run_blocking(self._open_for_read, key, discard=FsReader.close)

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        return await run_blocking(self._stat, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await run_blocking(self._delete, key)

    def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        validate_prefix(prefix)
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        walker = self._walk(prefix)
        try:
            while True:
                batch = await run_blocking(take, walker, _LIST_BATCH)
                for info in batch:
                    yield info
                if len(batch) < _LIST_BATCH:
                    return
        finally:
            walker.close()

    async def signed_url(
        self, key: str, ttl: timedelta | float | None = None, *, download_name: str | None = None
    ) -> str:
        validate_key(key)
        if not self._secret:
            raise StorageError(
                "signed URLs for the filesystem backend need a secret: set MASTER_ENCRYPTION_KEY or pass signing_secret"
            )
        if download_name is not None:
            content_disposition(download_name)  # validates before the name is signed
        exp = int(time.time()) + ttl_seconds(self.default_ttl if ttl is None else ttl)
        query = {"exp": str(exp), "sig": sign(self._secret, key, exp, download_name)}
        if download_name:
            query["dl"] = download_name
        return f"{self.public_base_url}{self.url_prefix}/{quote(key, safe='/')}?{urlencode(query)}"

    def verify_signed(self, key: str, exp: str | int, sig: str, *, download_name: str | None = None) -> None:
        verify_signed(self._secret, key, exp, sig, download_name=download_name)

    def local_path(self, key: str) -> Path:
        """The file behind `key`, for tools that need a path (ffmpeg). Read it, never write it:
        writes that bypass `put` lose atomicity."""
        validate_key(key)
        path = self.root / key
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root) or resolved != path:
            raise InvalidKey(key, "resolves through a symbolic link or outside the storage root")
        return resolved

    async def aclose(self) -> None:
        """Nothing is held open between calls; present to satisfy the protocol."""


def from_settings(settings: Settings, *, signing_secret: bytes | None = None) -> FsStorage:
    """Entry point `reelhouse.storage:fs`: objects under DATA_DIR/objects."""
    master = settings.security.master_encryption_key
    return FsStorage(
        settings.server.data_dir / "objects",
        signing_secret=signing_secret or (derive_signing_secret(master) if master else None),
        public_base_url=settings.server.public_base_url,
        default_ttl=settings.storage.signed_url_ttl,
    )
