"""What the archive's task handlers, routes and CLI share in one process. Built by the
composition root (`plugin.py`) and passed in; tests build one with fakes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelhouse.archive.chat.service import ChatService
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.live.settings import LiveSettings
from reelhouse.archive.settings import ArchiveSettings, OAuthFlowSettings
from reelhouse.archive.store import ChannelStore, VodStore
from reelhouse.archive.store.live import LiveStore
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.archive.vod_jobs import VodJobs
from reelhouse.archive.ytdlp import DownloadProgress, DownloadRequest, DownloadResult, run_download
from reelhouse.config import MediaSettings
from reelhouse.core.jobs.circuit import CircuitBreaker
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.overrides import RuntimeOverrides
from reelhouse.core.providers.youtube import YouTubeClient
from reelhouse.core.storage import Storage

_VOD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it becomes part of a file name
TRANSCODED_SUFFIX = ".transcoded"

Downloader = Callable[[DownloadRequest, Callable[[DownloadProgress], Awaitable[None]]], Awaitable[DownloadResult]]
Transcoder = Callable[[Path, Path, str], Awaitable[Any]]


def channel_directory(data_dir: Path, channel: str) -> Path:
    return data_dir / (channel or "_default")


@dataclass(frozen=True)
class VodFiles:
    """Where a VOD's files live: `DATA_DIR/<channel>/twitch_<id>.mp4`, one directory per
    channel so one channel's sweeps and retention never touch another's files."""

    data_dir: Path

    def vod_path(self, channel: str, twitch_vod_id: str) -> Path:
        if not _VOD_ID.fullmatch(twitch_vod_id):
            raise PermanentError(f"vod id {twitch_vod_id[:80]!r} cannot name a file")
        return channel_directory(self.data_dir, channel) / f"twitch_{twitch_vod_id}.mp4"

    def live_path(self, channel: str, placeholder: str) -> Path:
        """A live recording's joined MP4, until it becomes a VOD's file."""
        if not _VOD_ID.fullmatch(placeholder):
            raise PermanentError(f"placeholder {placeholder[:80]!r} cannot name a file")
        return channel_directory(self.data_dir, channel) / f"live_{placeholder}.mp4"

    def transcoded_path(self, source: Path) -> Path:
        return source.with_name(source.stem + TRANSCODED_SUFFIX + ".mp4")

    def clean_after_upload(self, settings: ArchiveSettings, downloaded_path: str) -> bool:
        """Delete what a confirmed upload made redundant (always the transcoded copy, the
        download itself under BACKFILL_AUTOCLEAN); True when the download went."""
        source = Path(downloaded_path)
        self.transcoded_path(source).unlink(missing_ok=True)
        if not settings.backfill_autoclean:
            return False
        source.unlink(missing_ok=True)
        return True


class YouTubeUploads:
    """Makes a YouTube client per upload from the stored token of the VOD's channel (or the
    deployment-wide one). New per upload: the token is read from the database each time, so a
    re-authorization through any API node is used at once."""

    def __init__(self, settings: ArchiveSettings, tokens: TokenStore) -> None:
        self.settings = settings
        self.tokens = tokens

    @property
    def configured(self) -> bool:
        return bool(self.settings.yt_client_id and self.settings.yt_client_secret)

    async def client(self, channel: str) -> YouTubeClient | None:
        """A client the caller closes, or None while uploads cannot be authorized."""
        if not self.configured or await self.tokens.load_for_channel("youtube", channel) is None:
            return None
        load, save = self.tokens.youtube_callbacks(channel)
        settings = self.settings
        return YouTubeClient(
            settings.yt_client_id,
            settings.yt_client_secret,
            load_tokens=load,
            save_tokens=save,
            redirect_uri=settings.yt_redirect_uri or None,
            api_base=settings.youtube_api_base,
            oauth_base=settings.youtube_oauth_base,
        )


@dataclass
class ArchiveServices:
    settings: ArchiveSettings  # the environment's; `current_settings()` adds the overrides
    oauth: OAuthFlowSettings
    chat_settings: ChatSettings
    media: MediaSettings
    overrides: RuntimeOverrides
    vods: VodStore
    channels: ChannelStore
    kv: KV
    queue: TaskQueue
    breaker: CircuitBreaker
    files: VodFiles
    tokens: TokenStore
    youtube: YouTubeUploads
    helix: HelixClient | None = None  # None without TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET
    chat: ChatService | None = None  # the chat recorder of this process
    download: Downloader = run_download
    transcode: Transcoder | None = None  # TRANSCODE_BEFORE_UPLOAD; set by the composition root
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    live: LiveStore = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    live_settings: LiveSettings = field(default_factory=LiveSettings)
    # Live segments go through the storage layer; one client per event loop (S3's connection
    # pool belongs to the loop that opened it). Set by the composition root.
    storage_factory: Callable[[], Storage] | None = None
    _storages: dict[asyncio.AbstractEventLoop, Storage] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = LiveStore(self.vods.engine)

    def storage(self) -> Storage:
        if self.storage_factory is None:
            raise PermanentError("no storage backend is configured for live recording")
        loop = asyncio.get_running_loop()
        storage = self._storages.get(loop)
        if storage is None:
            storage = self._storages[loop] = self.storage_factory()
        return storage

    async def current_settings(self) -> ArchiveSettings:
        """Environment settings with the operator's `/config` overrides on top, read per task."""
        return await self.overrides.effective(self.settings)

    @property
    def vod_jobs(self) -> VodJobs:
        return VodJobs(self.vods, self.queue, self.current_settings)

    async def watched_channels(self) -> list[str]:
        return await self.channels.watched_channels(self.settings.channels)

    async def aclose(self) -> None:
        if self.helix is not None:
            await self.helix.aclose()
        for close in self.closers:
            await close()
        storage = self._storages.pop(asyncio.get_running_loop(), None)
        if storage is not None:
            await storage.aclose()
