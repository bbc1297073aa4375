"""Fixtures for the archive pipeline tests: a real HLS origin (ffmpeg + HTTP), FakeTwitch,
FakeYouTube, and a runtime with the archive registered, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[3])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import reelhouse.archive.models  # noqa: E402,F401 - registers the archive tables
from reelhouse.archive.plugin import setup  # noqa: E402
from reelhouse.archive.tokens import TokenStore  # noqa: E402
from reelhouse.config import Settings  # noqa: E402
from reelhouse.core.jobs.scheduler import Scheduler  # noqa: E402
from reelhouse.core.jobs.worker import Worker, WorkerOptions  # noqa: E402
from reelhouse.core.runtime import build_runtime  # noqa: E402
from tests.fakes.hls_origin import HlsOrigin, generate_hls  # noqa: E402
from tests.fakes.server import ServedApp, serve  # noqa: E402
from tests.fakes.youtube import FakeYouTube  # noqa: E402

MASTER_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """2 s of 160x90 video + audio in one segment: yt-dlp's fixed cost dominates, as wanted
    for the 30-VOD end-to-end run."""
    return generate_hls(tmp_path_factory.mktemp("tiny"), duration=2, size="160x90", fps=10)


@pytest.fixture(scope="session")
def large_clip(tmp_path_factory) -> Path:
    """~3 MB in 12 segments of 1 s (CBR): a transfer long enough to interrupt on purpose."""
    return generate_hls(
        tmp_path_factory.mktemp("large"), duration=12, segment_seconds=1, size="320x180", video_bitrate="2M"
    )


@pytest.fixture
def origin() -> HlsOrigin:
    return HlsOrigin()


@pytest.fixture
def origin_server(origin: HlsOrigin) -> Iterator[ServedApp]:
    with serve(origin) as served:
        yield served


@pytest.fixture
def archive_env(
    monkeypatch, db_url, tmp_path, twitch, twitch_server, youtube, youtube_server, origin_server
) -> dict[str, str]:
    """Environment pointing every client at the fakes; tests adjust it before `make_runtime`."""
    env = {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(tmp_path / "data"),
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
        "TWITCH_CLIENT_ID": twitch.client_id,
        "TWITCH_CLIENT_SECRET": twitch.client_secret,
        "TWITCH_API_BASE": f"{twitch_server.base_url}/helix",
        "TWITCH_AUTH_BASE": f"{twitch_server.base_url}/oauth2",
        "TWITCH_VIDEO_URL_TEMPLATE": f"{origin_server.base_url}/videos/{{id}}/index.m3u8",
        "YOUTUBE_UPLOAD_ENABLED": "1",
        "YT_CLIENT_ID": youtube.client_id,
        "YT_CLIENT_SECRET": youtube.client_secret,
        "YOUTUBE_API_BASE": youtube_server.base_url,
        "YOUTUBE_OAUTH_BASE": youtube_server.base_url,
        "UPLOAD_CHUNK_BYTES": str(256 * 1024),
        "DOWNLOAD_BACKOFF_BASE": "0.2s",
        "UPLOAD_BACKOFF_BASE": "0.2s",
        "VOD_CATALOG_PAGE_DELAY": "0.05s",
        "CIRCUIT_FAILURE_THRESHOLD": "5",
        "YTDLP_CONCURRENT_FRAGMENTS": "4",
        "UPLOAD_DAILY_LIMIT": "0",
        "BACKFILL_UPLOAD_DAILY_LIMIT": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def apply_env(monkeypatch, env: dict[str, str], **changes: str) -> None:
    for key, value in changes.items():
        env[key] = value
        monkeypatch.setenv(key, value)


@pytest.fixture
async def make_runtime(archive_env):
    runtimes = []

    def make():
        runtime = build_runtime(Settings(), load_domains=False)
        setup(runtime)
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        await runtime.aclose()


async def store_youtube_token(runtime, youtube: FakeYouTube) -> None:
    """A YouTube token as the OAuth flow leaves it: refreshable, access token already stale."""
    store = TokenStore.from_settings(runtime.engine, runtime.settings)
    await store.save(
        "youtube",
        access_token="stale",
        refresh_token=youtube.add_refresh_token(),
        expires_at=datetime.now(UTC) - timedelta(minutes=5),
        scope="youtube.upload",
    )


@asynccontextmanager
async def running_worker(runtime, *, concurrency: int = 4, scheduler: bool = False, lease: float = 10):
    """A real worker (and optionally the scheduler) on this event loop."""
    stop = asyncio.Event()
    worker = Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id=f"test-{os.getpid()}-{id(runtime)}",
            concurrency=concurrency,
            lease=timedelta(seconds=lease),
            poll_interval=0.1,
            cancel_poll_interval=0.2,
            shutdown_grace=5,
        ),
    )
    tasks = [asyncio.create_task(worker.run())]
    if scheduler:
        tasks.append(asyncio.create_task(Scheduler(runtime.engine, runtime.periodic).run(stop, interval=0.3)))
    try:
        yield worker
    finally:
        stop.set()
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ytdlp_processes(output_fragment: str) -> list[psutil.Process]:
    """Processes whose command line names this output (yt-dlp and its launcher)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(output_fragment in part for part in cmdline) and any("yt_dlp" in p or "prctl" in p for p in cmdline):
            found.append(proc)
    return found
