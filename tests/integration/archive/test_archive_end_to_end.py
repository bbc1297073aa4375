"""A channel's whole archive, end to end: FakeTwitch lists 30 archived VODs (3 catalog pages),
the scheduler discovers them, real workers download each one from the HLS origin with real
yt-dlp and upload it to FakeYouTube; then /status and /metrics must agree with the database."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from reelhouse.app import create_app
from reelhouse.archive.models import channels, vods
from reelhouse.core.db.models import kv, tasks
from reelhouse.core.jobs import states

from .conftest import apply_env, running_worker, store_youtube_token, wait_for

VOD_COUNT = 30


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    text = (await client.get("/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
async def test_thirty_vods_discovered_downloaded_and_uploaded(
    make_runtime, monkeypatch, archive_env, twitch, youtube, origin, tiny_clip
):
    twitch.add_channel("streamer")
    videos = twitch.add_archives("streamer", VOD_COUNT)
    for video in videos:
        origin.add_vod(video["id"], tiny_clip)
    apply_env(
        monkeypatch,
        archive_env,
        TWITCH_CHANNEL="streamer",
        VOD_PROCESS_INTERVAL="1s",
        VOD_DISCOVERY_LIMIT="10",
        VOD_CATALOG_PAGE_SIZE="10",
        MAX_CONCURRENT_DOWNLOADS="3",
        YTDLP_CONCURRENT_FRAGMENTS="1",
    )
    runtime = make_runtime()
    await store_youtube_token(runtime, youtube)
    app = create_app(runtime.settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await scrape(client)
        async with running_worker(runtime, concurrency=5, scheduler=True):

            async def all_uploaded():
                async with runtime.engine.connect() as conn:
                    done = (
                        await conn.execute(
                            select(func.count()).select_from(vods).where(vods.c.youtube_url.is_not(None))
                        )
                    ).scalar_one()
                return done == VOD_COUNT

            await wait_for(all_uploaded, 240, "every VOD to be uploaded", interval=0.5)

        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(select(vods).order_by(vods.c.date))).all()
            running = (
                await conn.execute(
                    select(func.count())
                    .select_from(tasks)
                    .where(tasks.c.kind.in_(("vod.download", "vod.upload")), tasks.c.status != states.SUCCEEDED)
                )
            ).scalar_one()
            kv_rows = dict((await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == "streamer"))).all())
            channel = (await conn.execute(select(channels).where(channels.c.name == "streamer"))).one()
        assert len(rows) == VOD_COUNT
        assert {r.twitch_vod_id for r in rows} == {v["id"] for v in videos}
        for row in rows:
            assert row.processed is True and row.processing_error is None, row.twitch_vod_id
            assert row.youtube_url.startswith("https://www.youtube.com/watch?v=")
            assert row.download_state == "complete" and row.download_retries == 0
            assert row.downloaded_path is None, "BACKFILL_AUTOCLEAN deletes the file after the upload"
            assert row.job_id is not None and row.uploaded_at is not None
        assert running == 0
        assert not list((runtime.settings.server.data_dir / "streamer").glob("twitch_*")), "files left behind"
        # Exactly one YouTube session (and video) per VOD.
        assert len(youtube.videos) == VOD_COUNT
        for row in rows:
            assert len(youtube.sessions_for_title(f"{row.date:%Y-%m-%d} {row.title}")) == 1
        assert "catalog_after" not in kv_rows, "the finished catalog walk resets its cursor"
        assert "job_vod_process_last" in kv_rows and "avg_download_ms" in kv_rows and "avg_total_ms" in kv_rows
        assert channel.twitch_user_id is not None

        status = (await client.get("/status")).json()
        assert (status["pending"], status["errored"], status["processed"]) == (0, 0, VOD_COUNT)
        assert status["queue_by_priority"] == [] and status["active_downloads"] == 0
        assert status["max_concurrent_downloads"] == 3
        assert status["retry_config"]["download_max_attempts"] == 5
        assert status["avg_download_ms"] is not None and status["avg_upload_ms"] is not None
        assert status["last_process_run"] is not None

        after = await scrape(client)
        delta = {
            name: value(after, name, channel="streamer") - value(before, name, channel="streamer")
            for name in (
                "vod_downloads_started_total",
                "vod_downloads_succeeded_total",
                "vod_downloads_failed_total",
                "vod_uploads_succeeded_total",
                "vod_uploads_failed_total",
            )
        }
        assert delta == {
            "vod_downloads_started_total": VOD_COUNT,
            "vod_downloads_succeeded_total": VOD_COUNT,
            "vod_downloads_failed_total": 0,
            "vod_uploads_succeeded_total": VOD_COUNT,
            "vod_uploads_failed_total": 0,
        }
        assert value(after, "vod_queue_depth", channel="streamer") == 0
        assert value(after, "vod_processing_cycles_total", channel="streamer") >= 1
        for histogram in (
            "vod_download_duration_seconds",
            "vod_upload_duration_seconds",
            "vod_processing_total_duration_seconds",
        ):
            assert value(after, f"{histogram}_count") - value(before, f"{histogram}_count") == VOD_COUNT
        assert (
            value(after, "vod_processing_step_duration_seconds_count", step="upload")
            - value(before, "vod_processing_step_duration_seconds_count", step="upload")
            == VOD_COUNT
        )
