"""archive/tasks/download.py with its services passed in (fake yt-dlp runner, SQLite queue)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from reelhouse.archive.kinds import ArchiveTask, DownloadState
from reelhouse.archive.tasks.download import download_task
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.errors import CircuitOpenError, PermanentError, TransientError

from .conftest import FakeDownloader, add_vod, claim, make_services


async def test_a_download_completes_the_row_and_queues_the_upload_in_the_same_job(engine, tmp_path):
    services = make_services(engine, tmp_path, twitch_video_url_template="https://vods.example/{id}.m3u8")
    services.download = fake = FakeDownloader()
    await add_vod(services, "501", priority=7)
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "501", "generation": 2}, priority=7)
    result = await download_task(services, ctx)
    row = await services.vods.require("501")
    output = tmp_path / "data" / "chan" / "twitch_501.mp4"
    assert fake.requests[0].url == "https://vods.example/501.m3u8" and fake.requests[0].output == output
    assert (row.download_state, row.downloaded_path, row.download_bytes) == ("complete", str(output), 4096)
    assert result["bytes"] == 4096 and output.read_bytes() == fake.content
    async with engine.connect() as conn:
        follow = (await conn.execute(select(tasks).where(tasks.c.kind == ArchiveTask.UPLOAD))).one()
    assert follow.job_id == ctx.task.job_id and follow.priority == 7
    assert follow.payload["generation"] == 2 and follow.idempotency_key == "vod.upload:501:g2"


async def test_a_finished_file_is_not_downloaded_again(engine, tmp_path):
    services = make_services(engine, tmp_path)
    services.download = fake = FakeDownloader()
    done = tmp_path / "data" / "chan" / "twitch_502.mp4"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"complete")
    await add_vod(services, "502", download_state=DownloadState.COMPLETE, downloaded_path=str(done))
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "502"})
    await download_task(services, ctx)
    assert fake.requests == [], "the previous run finished the file; only the upload was missing"


async def test_a_permanent_failure_marks_the_vod_failed_and_discards_partial_files(engine, tmp_path):
    services = make_services(engine, tmp_path)
    services.download = FakeDownloader(error=PermanentError("HTTP Error 404: the VOD was deleted"))
    await add_vod(services, "503")
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "503"})
    with pytest.raises(PermanentError):
        await download_task(services, ctx)
    row = await services.vods.require("503")
    assert (row.download_state, row.processed, row.download_retries) == ("failed", True, 1)
    assert "deleted" in row.processing_error
    assert list((tmp_path / "data" / "chan").iterdir()) == [], "nothing will resume the .part"


async def test_transient_failures_count_against_the_channel_breaker_until_it_opens(engine, tmp_path):
    services = make_services(engine, tmp_path)  # the breaker opens after 2 failures
    services.download = FakeDownloader(error=TransientError("connection reset by peer"))
    await add_vod(services, "504")
    for attempt in (1, 2):
        ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "504"}, idempotency_key=f"k{attempt}")
        with pytest.raises(TransientError):
            await download_task(services, ctx)
        row = await services.vods.require("504")
        assert row.download_state == "interrupted" and "will retry" in row.processing_error
    assert (await services.breaker.state("chan")).state == "open"
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "504"}, idempotency_key="k3")
    with pytest.raises(CircuitOpenError):
        await download_task(services, ctx)
    assert len(services.download.requests) == 2, "an open breaker stops the call before yt-dlp runs"


async def test_an_operators_cancel_is_recorded_as_canceled(engine, tmp_path):
    services = make_services(engine, tmp_path)
    started = asyncio.Event()

    async def hangs(request, on_progress):
        started.set()
        await asyncio.Event().wait()

    services.download = hangs
    await add_vod(services, "505")
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "505"})
    async with engine.begin() as conn:
        await conn.execute(tasks.update().where(tasks.c.id == ctx.task.id).values(cancel_requested=True))
    running = asyncio.create_task(download_task(services, ctx))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    row = await services.vods.require("505")
    assert (row.download_state, row.processing_error) == ("canceled", "cancelled by operator")


async def test_an_unknown_vod_is_a_permanent_error(engine, tmp_path):
    services = make_services(engine, tmp_path)
    ctx = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "nope"})
    with pytest.raises(PermanentError, match="not in the vods table"):
        await download_task(services, ctx)


async def test_a_run_that_lost_its_task_cannot_record_the_download(engine, tmp_path):
    from datetime import timedelta

    from sqlalchemy import update

    from reelhouse.core.db.types import utcnow
    from reelhouse.core.jobs.errors import LeaseLost

    services = make_services(engine, tmp_path)
    await add_vod(services, "506")
    stale = await claim(services, ArchiveTask.DOWNLOAD, {"vod_id": "506"})

    async def meanwhile_another_worker_takes_over(request, on_progress):
        async with engine.begin() as conn:  # the lease ran out while this run was away
            await conn.execute(
                update(tasks)
                .where(tasks.c.id == stale.task.id)
                .values(lease_expires_at=utcnow() - timedelta(minutes=1))
            )
        [taken] = await services.queue.claim("other-worker", [ArchiveTask.DOWNLOAD], 1, timedelta(seconds=30))
        assert taken.id == stale.task.id and taken.fence > stale.fence
        return await FakeDownloader()(request, on_progress)

    services.download = meanwhile_another_worker_takes_over
    with pytest.raises(LeaseLost):
        await download_task(services, stale)
    row = await services.vods.require("506")
    assert row.download_state != "complete" and row.downloaded_path is None, "the stale run wrote nothing"
    async with engine.connect() as conn:
        uploads = (await conn.execute(select(tasks.c.id).where(tasks.c.kind == ArchiveTask.UPLOAD))).all()
    assert uploads == [], "nor did it queue the upload"
