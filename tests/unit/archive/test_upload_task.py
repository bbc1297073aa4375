"""archive/tasks/upload.py with its services passed in (a fake YouTube client, SQLite queue)."""

from __future__ import annotations

import pytest

from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.tasks.upload import upload_task
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError, RateLimitedError
from reelhouse.core.providers.errors import RateLimited, Rejected
from reelhouse.core.providers.youtube import UploadSessionExpired

from .conftest import FakeUploads, FakeYouTube, add_vod, claim, make_services


async def _downloaded(services, tmp_path, vod_id: str, **values):
    path = tmp_path / "data" / "chan" / f"twitch_{vod_id}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"m" * 2048)
    await add_vod(services, vod_id, downloaded_path=str(path), download_state="complete", **values)
    return path


async def test_an_upload_saves_its_session_first_and_then_the_video(engine, tmp_path):
    services = make_services(engine, tmp_path, youtube_upload_enabled=True, backfill_autoclean=True)
    services.youtube = FakeUploads(fake := FakeYouTube())
    path = await _downloaded(services, tmp_path, "601")
    ctx = await claim(services, ArchiveTask.UPLOAD, {"vod_id": "601"})
    result = await upload_task(services, ctx)
    row = await services.vods.require("601")
    assert result["youtube_url"] == "https://www.youtube.com/watch?v=yt-video-1"
    assert (row.youtube_url, row.processed, row.youtube_upload_uri) == (result["youtube_url"], True, None)
    assert fake.sessions == [(fake.sessions[0][0], 2048)] and "VOD 601" in fake.sessions[0][0]
    assert not path.exists() and row.downloaded_path is None, "BACKFILL_AUTOCLEAN removes the file"


async def test_a_saved_session_is_resumed_not_restarted(engine, tmp_path):
    services = make_services(engine, tmp_path, youtube_upload_enabled=True)
    services.youtube = FakeUploads(fake := FakeYouTube())
    await _downloaded(services, tmp_path, "602", youtube_upload_uri="https://upload.example/session/earlier")
    await upload_task(services, await claim(services, ArchiveTask.UPLOAD, {"vod_id": "602"}))
    assert fake.sessions == [] and fake.uploads[0][0] == "https://upload.example/session/earlier"


async def test_an_expired_session_is_replaced_once(engine, tmp_path):
    services = make_services(engine, tmp_path, youtube_upload_enabled=True)
    expired = FakeYouTube(fail_with=UploadSessionExpired("youtube", "upload session no longer exists"))
    services.youtube = FakeUploads(expired)
    await _downloaded(services, tmp_path, "603", youtube_upload_uri="https://upload.example/session/old")
    ctx = await claim(services, ArchiveTask.UPLOAD, {"vod_id": "603"})
    with pytest.raises(Exception, match="expired twice"):
        await upload_task(services, ctx)
    assert len(expired.sessions) == 1, "one new session after the saved one expired, not a loop"


async def test_quota_waits_are_passed_on_and_a_refusal_is_permanent(engine, tmp_path):
    services = make_services(engine, tmp_path, youtube_upload_enabled=True)
    services.youtube = FakeUploads(FakeYouTube(fail_with=RateLimited("youtube", "quota exhausted", utcnow())))
    await _downloaded(services, tmp_path, "604")
    with pytest.raises(RateLimited):  # the composition root maps it to a wait without an attempt
        await upload_task(services, await claim(services, ArchiveTask.UPLOAD, {"vod_id": "604"}))
    assert not (await services.vods.require("604")).processed
    services.youtube = FakeUploads(FakeYouTube(fail_with=Rejected("youtube", "invalid title", 400)))
    with pytest.raises(PermanentError, match="invalid title"):
        await upload_task(services, await claim(services, ArchiveTask.UPLOAD, {"vod_id": "604"}, idempotency_key="2"))
    row = await services.vods.require("604")
    assert row.processed and "invalid title" in row.processing_error


async def test_without_authorization_the_upload_waits_and_says_why(engine, tmp_path):
    services = make_services(engine, tmp_path, youtube_upload_enabled=True)  # FakeUploads(None): no token
    await _downloaded(services, tmp_path, "605")
    with pytest.raises(RateLimitedError, match="not authorized"):
        await upload_task(services, await claim(services, ArchiveTask.UPLOAD, {"vod_id": "605"}))
    assert "waiting for YouTube authorization" in (await services.vods.require("605")).processing_error


async def test_uploads_off_or_skipped_finish_without_a_client(engine, tmp_path):
    services = make_services(engine, tmp_path)  # YOUTUBE_UPLOAD_ENABLED off
    await _downloaded(services, tmp_path, "606")
    result = await upload_task(services, await claim(services, ArchiveTask.UPLOAD, {"vod_id": "606"}))
    assert result["skipped"] == "YOUTUBE_UPLOAD_ENABLED is off"
    assert (await services.vods.require("606")).processed
