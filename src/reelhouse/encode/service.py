"""What every part of the encode domain shares: settings, the storage handle, the job spec,
scratch directories and the ways a task gets at its source file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import ConfigError, describe_validation_error
from reelhouse.core.storage import Storage, open_storage
from reelhouse.encode.settings import EncodeSettings

if TYPE_CHECKING:
    from reelhouse.core.runtime import Runtime

JOB_KIND = "encode"
MEDIA_ROUTE = "/media"


class ProfileChoice(BaseModel):
    name: str
    profile: dict[str, Any]


class EncodeSpec(BaseModel):
    """The job as submitted, carried in every task payload of the job.

    The profile is a snapshot of its definition at submit time: editing or deleting a custom
    profile later never changes what an already submitted job encodes.
    """

    source_kind: Literal["upload", "url", "key"]
    source_key: str | None = None
    source_url: str | None = None
    source_name: str | None = None
    profile_name: str
    profile: dict[str, Any]
    output_prefix: str
    more_profiles: list[ProfileChoice] = []
    """The other profiles of a multi-profile job, each encoded to its own asset."""

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), **extra}

    def per_profile(self) -> list[EncodeSpec]:
        """One spec per profile; with several, each writes under `<output_prefix>/<profile>`."""
        if not self.more_profiles:
            return [self]
        choices = [ProfileChoice(name=self.profile_name, profile=self.profile), *self.more_profiles]
        return [
            self.model_copy(
                update={
                    "profile_name": choice.name,
                    "profile": choice.profile,
                    "output_prefix": f"{self.output_prefix}/{choice.name}",
                    "more_profiles": [],
                }
            )
            for choice in choices
        ]


def load_encode_settings() -> EncodeSettings:
    try:
        return EncodeSettings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def media_url(key: str) -> str:
    """The authenticated playback path of a stored output."""
    return f"{MEDIA_ROUTE}/{quote(key, safe='/')}"


class EncodeService:
    """One per runtime. Storage clients are opened per event loop: the S3 client's connection
    pool belongs to the loop that opened it, and tests run the API server and the CLI on
    different loops than the worker."""

    def __init__(self, runtime: Runtime, settings: EncodeSettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or load_encode_settings()
        self._storages: dict[asyncio.AbstractEventLoop, Storage] = {}

    @property
    def engine(self) -> AsyncEngine:
        return self.runtime.engine

    def storage(self) -> Storage:
        loop = asyncio.get_running_loop()
        storage = self._storages.get(loop)
        if storage is None:
            storage = self._storages[loop] = open_storage(self.runtime.settings)
        return storage

    async def close_storage(self) -> None:
        """Close the storage client of the running loop (others belong to their own loops)."""
        storage = self._storages.pop(asyncio.get_running_loop(), None)
        if storage is not None:
            await storage.aclose()

    def output_prefix(self, job_id: int, requested: str | None) -> str:
        base = self.settings.output_prefix
        return f"{base}/{requested}" if requested else f"{base}/job-{job_id}"

    def owns_output(self, key: str) -> bool:
        return key.startswith(self.settings.output_prefix + "/")

    def upload_key(self, filename: str | None) -> str:
        return f"{self.settings.upload_prefix}/{uuid.uuid4().hex}/{safe_filename(filename)}"

    @contextlib.asynccontextmanager
    async def scratch(self, label: str) -> AsyncIterator[Path]:
        """A private temporary directory, removed however the block ends (cancellation too)."""
        root = self.settings.scratch_dir(self.runtime.settings.server.data_dir)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{label}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            # In a thread: a ladder's scratch holds gigabytes, and the loop serves the API too.
            # A second cancellation cannot stop the thread, so the directory still goes.
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))


def safe_filename(name: str | None) -> str:
    """A storage-key-safe file name that keeps the extension (ffprobe does not need it, people do)."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).strip("._")
    return cleaned[:120] or "source"


def local_path_of(storage: Storage, key: str) -> Path | None:
    """The file behind `key` when the backend is a local filesystem, so ffmpeg reads it in place."""
    local_path = getattr(storage, "local_path", None)
    if local_path is None:
        return None
    path = local_path(key)
    return path if path.is_file() else None


async def probe_locator(storage: Storage, key: str) -> str:
    """Where ffprobe reads the source: the file itself, or a short-lived signed URL (ffprobe
    reads only the headers it needs over HTTP ranges instead of the whole object)."""
    path = local_path_of(storage, key)
    if path is not None:
        return str(path)
    await storage.stat(key)  # ObjectNotFound names the key before ffprobe would name a URL
    return await storage.signed_url(key, 900)


async def download_to(
    storage: Storage, key: str, target: Path, on_bytes: Callable[[int, int], Any] | None = None
) -> Path:
    """Copy an object to a local file for ffmpeg, which seeks freely in a local file (a presigned
    URL could expire during a long encode)."""
    info = await storage.stat(key)
    done = 0
    with target.open("wb") as handle:
        async with contextlib.aclosing(storage.get(key)) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
                done += len(chunk)
                if on_bytes is not None:
                    await on_bytes(done, info.size)
    return target


async def delete_prefix(storage: Storage, prefix: str) -> int:
    """Delete every object under `prefix/`; returns how many."""
    keys = []
    async with contextlib.aclosing(storage.list(prefix.rstrip("/") + "/")) as listing:
        async for info in listing:
            keys.append(info.key)
    for key in keys:
        await storage.delete(key)
    return len(keys)


async def prefix_is_empty(storage: Storage, prefix: str) -> bool:
    async with contextlib.aclosing(storage.list(prefix.rstrip("/") + "/")) as listing:
        async for _info in listing:
            return False
    return True
