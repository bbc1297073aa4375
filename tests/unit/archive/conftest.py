"""Archive handlers with their services passed in: a migrated SQLite file for the queue and the
stores, and fake provider clients. No environment variables, no servers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.services import ArchiveServices, VodFiles, YouTubeUploads
from reelhouse.archive.settings import ArchiveSettings, OAuthFlowSettings
from reelhouse.archive.store import ChannelStore, VodStore, new_vod_row
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.ytdlp import DownloadProgress, DownloadRequest, DownloadResult
from reelhouse.config import MediaSettings
from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs.circuit import CircuitBreaker
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.overrides import RuntimeOverrides
from reelhouse.core.security.crypto import Keyring
from tests.conftest import migrated_sqlite

LEASE = timedelta(seconds=30)


@dataclass
class FakeDownloader:
    """Stands in for the yt-dlp runner: writes `content` to the request's output, reporting
    progress on the way, or raises `error`."""

    content: bytes = b"v" * 4096
    error: BaseException | None = None
    requests: list[DownloadRequest] = field(default_factory=list)

    async def __call__(self, request: DownloadRequest, on_progress: Any) -> DownloadResult:
        self.requests.append(request)
        request.output.parent.mkdir(parents=True, exist_ok=True)
        partial = request.output.with_name(request.output.name + ".part")
        partial.write_bytes(self.content[: len(self.content) // 2])
        await on_progress(DownloadProgress(len(self.content) // 2, len(self.content), 1000.0, 2.0))
        if self.error is not None:
            raise self.error
        partial.write_bytes(self.content)
        partial.replace(request.output)
        return DownloadResult(request.output, len(self.content), 0.25)


@dataclass
class FakeYouTube:
    """The two calls `upload_task` makes on a YouTube client, recorded; `fail_with` on upload."""

    video_id: str = "yt-video-1"
    fail_with: BaseException | None = None
    sessions: list[tuple[str, int]] = field(default_factory=list)
    uploads: list[tuple[str, Path]] = field(default_factory=list)

    async def __aenter__(self) -> FakeYouTube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def start_session(self, metadata: Any, *, size: int) -> str:
        self.sessions.append((metadata.title, size))
        return f"https://upload.example/session/{len(self.sessions)}"

    async def upload(self, uri: str, path: Path, *, on_progress: Any, chunk_size: int) -> str:
        self.uploads.append((uri, path))
        if self.fail_with is not None:
            raise self.fail_with
        await on_progress(path.stat().st_size, path.stat().st_size)
        return self.video_id


class FakeUploads(YouTubeUploads):
    def __init__(self, client: FakeYouTube | None) -> None:
        self._client = client

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def client(self, channel: str) -> Any:
        return self._client


@pytest.fixture
async def engine(tmp_path, tmp_path_factory) -> AsyncIterator[Any]:
    path = await migrated_sqlite(tmp_path / "unit.db", tmp_path_factory)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    yield engine
    await engine.dispose()


def make_services(engine: Any, tmp_path: Path, **settings: Any) -> ArchiveServices:
    archive = ArchiveSettings(_env_file=None, **settings)
    tokens = TokenStore(engine, Keyring.from_secrets("unit test key"))
    overrides = RuntimeOverrides(engine)
    return ArchiveServices(
        settings=archive,
        oauth=OAuthFlowSettings(_env_file=None),
        chat_settings=ChatSettings(_env_file=None),
        media=MediaSettings(_env_file=None),
        overrides=overrides,
        vods=VodStore(engine),
        channels=ChannelStore(engine),
        kv=KV(engine),
        queue=TaskQueue(engine),
        breaker=CircuitBreaker(engine, failure_threshold=2, cooldown=timedelta(minutes=5)),
        files=VodFiles(tmp_path / "data"),
        tokens=tokens,
        youtube=FakeUploads(None),
    )


async def claim(services: ArchiveServices, kind: str, payload: dict[str, Any], **options: Any) -> TaskContext:
    """Enqueue one task and claim it as a worker would; the context a handler receives."""
    await services.queue.enqueue(kind, payload, **options)
    [task] = await services.queue.claim("unit-worker", [kind], 1, LEASE)
    return TaskContext(task=task, queue=services.queue, owner="unit-worker", logger=logging.getLogger("unit"))


async def add_vod(services: ArchiveServices, vod_id: str, channel: str = "chan", **values: Any) -> None:
    await services.vods.insert_new([new_vod_row(vod_id, channel, title=f"VOD {vod_id}", **values)])
