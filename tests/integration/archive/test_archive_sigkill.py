"""SIGKILL a worker process mid-download and then mid-upload: the next worker resumes the
download from its `.part` files (measured at the origin: few bytes fetched twice) and the upload
from its saved resumable session (FakeYouTube sees one session for the VOD, with the file's
exact bytes)."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from reelhouse.core.db.models import tasks
from tests.archive_support import vod_jobs
from tests.fakes.server import serve

from .conftest import apply_env, store_youtube_token, wait_for, ytdlp_processes
from .test_archive_failures import add_vod, vod_row

WORKER = Path(__file__).with_name("archive_worker.py")
LEASE = 2.0


class SlowChunks:
    """Delays every media chunk PUT, so an upload of a few MB takes seconds."""

    def __init__(self, app, delay: float) -> None:
        self.app, self.delay = app, delay

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "PUT":
            headers = dict(scope["headers"])
            if not headers.get(b"content-range", b"").startswith(b"bytes */"):
                await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


def start_worker(name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), name, str(LEASE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
async def test_sigkill_mid_download_and_mid_upload_resumes_both(
    make_runtime, monkeypatch, archive_env, origin, youtube, large_clip
):
    origin.rate_per_connection = 250_000  # with 2 fragments in flight: ~6 s for the clip
    origin.add_vod("8001", large_clip)
    with serve(SlowChunks(youtube, 0.25)) as slow_youtube:
        apply_env(
            monkeypatch,
            archive_env,
            YOUTUBE_API_BASE=slow_youtube.base_url,
            YOUTUBE_OAUTH_BASE=slow_youtube.base_url,
            YTDLP_CONCURRENT_FRAGMENTS="2",
            BACKFILL_AUTOCLEAN="0",
        )
        runtime = make_runtime()
        engine = runtime.engine
        await store_youtube_token(runtime, youtube)
        await add_vod(engine, "8001", title="Kill me twice")
        await vod_jobs(runtime).enqueue("8001")
        total = origin.vod_size("8001")
        output = "twitch_8001.mp4"
        workers = []
        try:
            # 1. Kill mid-download.
            workers.append(start_worker("kill-a"))

            async def downloading_a_third():
                return origin.bytes_sent("8001") >= total * 0.35

            await wait_for(downloading_a_third, 120, "a third of the VOD to be fetched", interval=0.05)
            kill(workers[-1])
            sent_at_kill = origin.bytes_sent("8001")
            assert sent_at_kill < total * 0.9, "the kill should land mid-download"

            async def no_orphan():
                return not ytdlp_processes(output)

            await wait_for(no_orphan, 10, "yt-dlp to die with its worker (no orphan)")
            part_files = list((runtime.settings.server.data_dir / "chan").glob(f"{output}.part*"))
            assert part_files, "the killed download leaves its .part files for the next worker"

            # 2. The next worker resumes the download; kill it mid-upload.
            workers.append(start_worker("kill-b"))

            async def upload_under_way():
                row = await vod_row(engine, "8001")
                if row.youtube_upload_uri is None:
                    return False
                session = youtube.session_for_uri(row.youtube_upload_uri)
                return session.committed >= session.total * 0.3

            await wait_for(upload_under_way, 180, "the upload to be a third done", interval=0.05)
            kill(workers[-1])
            row = await vod_row(engine, "8001")
            session_uri = row.youtube_upload_uri
            session = youtube.session_for_uri(session_uri)
            assert session.video_id is None and session.committed < session.total, "kill should land mid-upload"
            refetched = origin.bytes_sent("8001") - total
            assert refetched < total * 0.3, f"{refetched} of {total} bytes fetched twice"

            # 3. A third worker finishes the same session.
            workers.append(start_worker("kill-c"))

            async def processed():
                return (await vod_row(engine, "8001")).processed

            await wait_for(processed, 180, "the VOD to be processed")
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=20)

    row = await vod_row(engine, "8001")
    assert row.youtube_url is not None and row.processing_error is None
    assert row.youtube_upload_uri is None
    sessions = youtube.sessions_for_title(f"{row.date:%Y-%m-%d} Kill me twice")
    assert len(sessions) == 1, "a resumed upload must not open a second YouTube session"
    assert youtube.session_for_uri(session_uri) is sessions[0]
    assert len(youtube.videos) == 1
    local = Path(row.downloaded_path)
    assert hashlib.sha256(local.read_bytes()).hexdigest() == youtube.content_sha256(sessions[0].upload_id)
    async with engine.connect() as conn:
        runs = {
            kind: (attempts, lost)
            for kind, attempts, lost in (
                await conn.execute(
                    select(tasks.c.kind, tasks.c.attempts, tasks.c.lost_attempts).where(tasks.c.job_id == row.job_id)
                )
            ).all()
        }
    # Each killed run counts as lost with its worker, not as a failed attempt.
    assert runs == {"vod.download": (1, 1), "vod.upload": (1, 1)}
