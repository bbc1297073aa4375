"""What the live domain's routes, tasks and background services share."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from reelhouse.config import Settings
from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.keys import MasterKeys
from reelhouse.core.storage import Storage, open_storage
from reelhouse.live.blocking import PlaylistSignals
from reelhouse.live.keys import callback_token
from reelhouse.live.settings import LiveSettings
from reelhouse.live.store import LiveStore

LINK_KEY_PURPOSE = "live/playback-link/v1"
VIEWER_WINDOW = 30.0  # a viewer counts while it fetched a playlist in the last 30 s
MAX_TRACKED_VIEWERS = 10_000


@dataclass
class Viewers:
    """Viewers of each stream's HLS output: distinct callers that fetched a playlist recently.
    Counted by the process serving playback (the monitor publishes them as gauges)."""

    seen: dict[int, dict[str, float]] = field(default_factory=dict)

    def touch(self, stream_id: int, viewer: str) -> None:
        by_stream = self.seen.setdefault(stream_id, {})
        if len(by_stream) >= MAX_TRACKED_VIEWERS and viewer not in by_stream:
            self.prune(stream_id)
            if len(by_stream) >= MAX_TRACKED_VIEWERS:
                return
        by_stream[viewer] = time.monotonic()

    def prune(self, stream_id: int) -> None:
        cutoff = time.monotonic() - VIEWER_WINDOW
        by_stream = self.seen.get(stream_id, {})
        for viewer in [v for v, at in by_stream.items() if at < cutoff]:
            del by_stream[viewer]

    def count(self, stream_id: int) -> int:
        self.prune(stream_id)
        return len(self.seen.get(stream_id, {}))


@dataclass
class LiveServices:
    runtime_settings: Settings
    settings: LiveSettings
    store: LiveStore
    # The master keys are read (and on a first start generated) when first needed, not when the
    # app is built: building an app must not create the key file.
    keys: MasterKeys
    viewers: Viewers = field(default_factory=Viewers)
    # Recorded chunks of a stream are appended one at a time (nginx may call back concurrently).
    record_locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # LL-HLS: a transcode in this process wakes the blocking playlist requests it satisfies.
    signals: PlaylistSignals = field(default_factory=PlaylistSignals)
    _storages: dict[asyncio.AbstractEventLoop, Storage] = field(default_factory=dict)

    @functools.cached_property
    def keyring(self) -> Keyring:
        return self.keys.keyring()

    @functools.cached_property
    def link_secret(self) -> bytes:
        return self.keys.subkey(LINK_KEY_PURPOSE)

    @functools.cached_property
    def callback_token(self) -> str:
        return callback_token(self.keys.subkey("live/ingest-callback"))

    def storage(self) -> Storage:
        loop = asyncio.get_running_loop()
        storage = self._storages.get(loop)
        if storage is None:
            storage = self._storages[loop] = open_storage(self.runtime_settings)
        return storage

    async def aclose(self) -> None:
        storage = self._storages.pop(asyncio.get_running_loop(), None)
        if storage is not None:
            await storage.aclose()

    def stream_prefix(self, stream_id: int) -> str:
        return f"{self.settings.storage_prefix}/{stream_id}"

    def hls_folder(self, stream_id: int) -> str:
        return f"{self.stream_prefix(stream_id)}/hls"

    def recording_folder(self, stream_id: int, session: int) -> str:
        return f"{self.stream_prefix(stream_id)}/rec/{session}"

    def scratch_root(self) -> Path:
        return self.runtime_settings.server.data_dir / "work" / "live"

    @contextlib.asynccontextmanager
    async def scratch(self, label: str) -> AsyncIterator[Path]:
        root = self.scratch_root()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{label}-{uuid.uuid4().hex[:10]}"
        path.mkdir()
        try:
            yield path
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))

    def destination_key_context(self, destination_id: int) -> str:
        return f"stream_destinations|{destination_id}|key"

    def restream_key_context(self, restream_id: int) -> str:
        return f"restreams|{restream_id}|key"
