"""The pipeline's failure paths with real yt-dlp, a real HLS origin and FakeYouTube, on SQLite and
PostgreSQL: a deleted VOD, an operator's cancel, YouTube's quota, the daily upload cap."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import timedelta

from sqlalchemy import insert, select, update

from reelhouse.archive import metrics
from reelhouse.archive.models import vods
from reelhouse.core.db.models import jobs, kv, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.control import cancel_job
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.providers.youtube import VideoMetadata, next_quota_reset
from reelhouse.core.telemetry.metrics import CIRCUIT_OPEN
from tests.archive_support import archive_services, vod_jobs

from .conftest import apply_env, running_worker, store_youtube_token, wait_for, ytdlp_processes


async def add_vod(engine, vod_id: str, *, channel: str = "chan", title: str | None = None, **values) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            insert(vods).values(
                channel=channel,
                twitch_vod_id=vod_id,
                title=title or f"VOD {vod_id}",
                date=values.pop("date", now - timedelta(hours=1)),
                duration_seconds=60,
                created_at=now,
                updated_at=now,
                **values,
            )
        )


async def vod_row(engine, vod_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).one()


async def tasks_of(engine, job_id: int):
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.id))).all()


def counter(metric, channel: str = "chan") -> float:
    return metric.labels(channel)._value.get()


async def test_deleted_vod_fails_permanently_with_a_clear_error(make_runtime, origin):
    runtime = make_runtime()
    origin.delete_vod("4040")
    await add_vod(runtime.engine, "4040")
    failed_before = counter(metrics.DOWNLOADS_FAILED)
    job_id = await vod_jobs(runtime).enqueue("4040")
    async with running_worker(runtime):

        async def finished():
            return (await tasks_of(runtime.engine, job_id))[0].status == states.FAILED

        await wait_for(finished, 30, "the download task to fail")

    row = await vod_row(runtime.engine, "4040")
    assert row.job_id == job_id
    assert row.processed is True and row.youtube_url is None
    assert row.download_state == "failed"
    assert row.processing_error.startswith("download: VOD not found (HTTP 404)")
    [task] = await tasks_of(runtime.engine, job_id)
    assert task.attempts == 1, "a permanent error must not be retried"
    assert task.error_class == "permanent"
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(select(jobs.c.status).where(jobs.c.id == job_id))).scalar() == states.JOB_FAILED
    assert counter(metrics.DOWNLOADS_FAILED) == failed_before + 1
    breaker = await runtime.breaker.state("chan")
    assert breaker.failures == 0, "a deleted VOD says nothing about the channel's health"
    # The discovery sweep must not pick the failed VOD up again.
    assert await vod_jobs(runtime).enqueue_pending("chan") == []


async def test_cancel_stops_ytdlp_within_two_seconds_and_is_not_retried(make_runtime, origin, large_clip):
    origin.rate_per_connection = 100_000  # ~30 s for the clip: the cancel lands mid-transfer
    origin.add_vod("5001", large_clip)
    runtime = make_runtime()
    await add_vod(runtime.engine, "5001")
    job_id = await vod_jobs(runtime).enqueue("5001")
    async with running_worker(runtime):
        await wait_for(lambda: _sent_some(origin, "5001"), 30, "yt-dlp to start fetching segments")
        assert ytdlp_processes("twitch_5001.mp4"), "yt-dlp should be running"
        assert await cancel_job(runtime.engine, job_id)

        async def ytdlp_gone():
            return not ytdlp_processes("twitch_5001.mp4")

        await wait_for(ytdlp_gone, 30, "yt-dlp to exit", interval=0.05)  # how fast: bench material

        async def cancelled():
            return (await tasks_of(runtime.engine, job_id))[0].status == states.CANCELLED

        await wait_for(cancelled, 10, "the task to end cancelled")
        await asyncio.sleep(1.0)  # a retry would have been claimed by now
    [task] = await tasks_of(runtime.engine, job_id)
    assert task.status == states.CANCELLED and task.attempts == 1
    row = await vod_row(runtime.engine, "5001")
    assert row.download_state == "canceled"
    assert row.processing_error == "cancelled by operator"
    assert row.processed is False
    assert await vod_jobs(runtime).enqueue_pending("chan") == [], "a cancel must stick"


async def _sent_some(origin, vod_id: str) -> bool:
    return origin.bytes_sent(vod_id) > 50_000


async def upload_task_for(runtime, vod_id: str, path) -> int:
    """A VOD whose download is done, with its upload task queued (what download_task leaves)."""
    await add_vod(runtime.engine, vod_id, downloaded_path=str(path), download_state="complete")
    job_id = await vod_jobs(runtime).enqueue(vod_id)
    async with runtime.engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.job_id == job_id).values(status=states.SUCCEEDED))
    await TaskQueue(runtime.engine).enqueue(
        "vod.upload", {"vod_id": vod_id, "channel": "chan"}, job_id=job_id, max_attempts=3
    )
    return job_id


async def test_quota_exceeded_waits_for_the_pacific_reset_without_spending_retries(make_runtime, youtube, tmp_path):
    runtime = make_runtime()
    await store_youtube_token(runtime, youtube)
    media = tmp_path / "twitch_6001.mp4"
    media.write_bytes(b"\x00" * (600 * 1024))
    job_id = await upload_task_for(runtime, "6001", media)
    youtube.quota_exceeded_next(1, on="session")
    async with running_worker(runtime):

        async def waiting():
            upload = (await tasks_of(runtime.engine, job_id))[-1]
            return upload.status == states.QUEUED and upload.error_class == "rate_limited"

        await wait_for(waiting, 20, "the upload to wait for the quota")
    upload = (await tasks_of(runtime.engine, job_id))[-1]
    assert upload.attempts == 0, "waiting for the quota must not spend an attempt"
    assert abs((upload.run_after - next_quota_reset()).total_seconds()) < 5
    assert "quota" in upload.last_error
    assert youtube.sessions == {}, "no session may be left behind by a refused create"
    row = await vod_row(runtime.engine, "6001")
    assert row.processed is False and row.youtube_url is None

    # The reset arrives: the same task uploads, once.
    async with runtime.engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == upload.id).values(run_after=utcnow()))
    async with running_worker(runtime):

        async def uploaded():
            return (await vod_row(runtime.engine, "6001")).youtube_url is not None

        await wait_for(uploaded, 20, "the upload after the reset")
    upload = (await tasks_of(runtime.engine, job_id))[-1]
    assert upload.status == states.SUCCEEDED and upload.attempts == 1
    assert len(youtube.videos) == 1
    row = await vod_row(runtime.engine, "6001")
    assert row.processed is True and row.uploaded_at is not None and row.youtube_upload_uri is None


async def test_daily_upload_cap_waits_until_the_window_frees(make_runtime, youtube, tmp_path, monkeypatch, archive_env):
    apply_env(monkeypatch, archive_env, UPLOAD_DAILY_LIMIT="1")
    runtime = make_runtime()
    await store_youtube_token(runtime, youtube)
    uploaded_at = utcnow() - timedelta(hours=3)
    await add_vod(
        runtime.engine, "7000", processed=True, youtube_url="https://www.youtube.com/watch?v=x", uploaded_at=uploaded_at
    )
    media = tmp_path / "twitch_7001.mp4"
    media.write_bytes(b"\x01" * 1024)
    job_id = await upload_task_for(runtime, "7001", media)
    async with running_worker(runtime):

        async def waiting():
            return (await tasks_of(runtime.engine, job_id))[-1].error_class == "rate_limited"

        await wait_for(waiting, 20, "the upload to wait for the daily window")
    upload = (await tasks_of(runtime.engine, job_id))[-1]
    assert upload.attempts == 0
    assert "UPLOAD_DAILY_LIMIT" in upload.last_error
    assert abs((upload.run_after - (uploaded_at + timedelta(hours=24))).total_seconds()) < 5
    assert youtube.sessions == {}


async def test_transcode_before_upload_sends_the_encode_and_cleans_up(
    make_runtime, youtube, tiny_clip, tmp_path, monkeypatch, archive_env
):
    apply_env(monkeypatch, archive_env, TRANSCODE_BEFORE_UPLOAD="mp4-720p", BACKFILL_AUTOCLEAN="0")
    runtime = make_runtime()
    await store_youtube_token(runtime, youtube)
    source = tmp_path / "twitch_9001.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(tiny_clip / "index.m3u8"), "-c", "copy", str(source)], check=True
    )
    original = source.read_bytes()
    job_id = await upload_task_for(runtime, "9001", source)
    async with running_worker(runtime):

        async def uploaded():
            return (await vod_row(runtime.engine, "9001")).youtube_url is not None

        await wait_for(uploaded, 60, "the transcoded upload")
    [session] = youtube.sessions.values()
    sent = session.path.read_bytes()
    assert sent != original and len(sent) == session.total, "the encode, not the download, is uploaded"
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            str(session.path),
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "h264"
    assert not (tmp_path / "twitch_9001.transcoded.mp4").exists(), "the encode is removed after the upload"
    assert source.read_bytes() == original, "the download is kept when BACKFILL_AUTOCLEAN is off"
    assert (await vod_row(runtime.engine, "9001")).downloaded_path == str(source)
    assert (await tasks_of(runtime.engine, job_id))[-1].status == states.SUCCEEDED


async def test_transient_failures_open_the_channel_breaker_and_the_retry_waits(make_runtime, monkeypatch, archive_env):
    # Nothing listens on port 9 (discard): yt-dlp fails with "connection refused", a transient error.
    apply_env(
        monkeypatch,
        archive_env,
        TWITCH_VIDEO_URL_TEMPLATE="http://127.0.0.1:9/videos/{id}/index.m3u8",
        CIRCUIT_FAILURE_THRESHOLD="1",
        CIRCUIT_OPEN_COOLDOWN="10m",
    )
    runtime = make_runtime()
    await add_vod(runtime.engine, "3001")
    failures_before = counter(metrics.CIRCUIT_FAILURES)
    job_id = await vod_jobs(runtime).enqueue("3001")
    async with running_worker(runtime):

        async def waiting_on_breaker():
            return (await tasks_of(runtime.engine, job_id))[0].error_class == "circuit_open"

        await wait_for(waiting_on_breaker, 30, "the retry to wait for the open breaker")
    [task] = await tasks_of(runtime.engine, job_id)
    assert task.status == states.QUEUED and task.attempts == 1, "waiting on a breaker spends no attempt"
    breaker = await runtime.breaker.state("chan")
    assert breaker.state == "open" and breaker.failures == 1
    assert abs((task.run_after - breaker.open_until).total_seconds()) < 2
    async with runtime.engine.connect() as conn:
        keys = dict((await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == "chan"))).all())
    assert keys["circuit_state"] == "open" and "circuit_open_until" in keys  # the runbook's kv keys
    row = await vod_row(runtime.engine, "3001")
    assert row.processed is False and row.download_retries == 1
    assert row.processing_error.startswith("download: yt-dlp failed") and "will retry" in row.processing_error
    assert counter(metrics.CIRCUIT_FAILURES) == failures_before + 1
    assert CIRCUIT_OPEN.labels("chan")._value.get() == 1


async def test_an_expired_saved_session_is_replaced_and_yields_one_video(make_runtime, youtube, tmp_path):
    runtime = make_runtime()
    await store_youtube_token(runtime, youtube)
    media = tmp_path / "twitch_9101.mp4"
    media.write_bytes(os.urandom(300 * 1024))
    job_id = await upload_task_for(runtime, "9101", media)
    # A session saved by an earlier attempt, expired since (YouTube keeps them about a week).
    client = await archive_services(runtime).youtube.client("chan")
    async with client:
        stale = await client.start_session(VideoMetadata(title="stale"), size=media.stat().st_size)
    youtube.expire_session(youtube.session_for_uri(stale).upload_id)
    async with runtime.engine.begin() as conn:
        await conn.execute(update(vods).where(vods.c.twitch_vod_id == "9101").values(youtube_upload_uri=stale))
    async with running_worker(runtime):

        async def uploaded():
            return (await vod_row(runtime.engine, "9101")).youtube_url is not None

        await wait_for(uploaded, 30, "the upload into a fresh session")
    assert len(youtube.sessions) == 2 and len(youtube.videos) == 1
    [video] = youtube.videos.values()
    assert video["snippet"]["title"] != "stale"
    assert (await tasks_of(runtime.engine, job_id))[-1].attempts == 1
    assert (await vod_row(runtime.engine, "9101")).youtube_upload_uri is None
