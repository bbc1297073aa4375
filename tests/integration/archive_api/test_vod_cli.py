"""`reelhouse vod ...` through Typer's CliRunner against a real database (DATABASE_URL/DATA_DIR in
the environment, as an operator would run it). The CLI runs in a thread with its own event
loop and engine, like a separate process; the test seeds and checks through its own engine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from reelhouse.archive.cli import vod_app
from reelhouse.archive.models import vods
from reelhouse.config import reset_settings_cache
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import ServedApp, serve
from tests.integration.archive_api.conftest import add_vod

runner = CliRunner()


async def vod(args: list[str], env: dict[str, str] | None = None):
    """Invoke `reelhouse vod <args>` as a fresh process would: settings read from the env again."""

    def invoke():
        reset_settings_cache()
        try:
            return runner.invoke(vod_app, args, env={"LOG_LEVEL": "warning", "COLUMNS": "200", **(env or {})})
        finally:
            reset_settings_cache()

    return await asyncio.to_thread(invoke)


async def vod_row(engine, vod_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()


async def test_add_list_cancel_retry(engine):
    added = await vod(["add", "https://www.twitch.tv/videos/3001?t=1h2m", "--channel", "Bravo", "--title", "Finale"])
    assert added.exit_code == 0, added.output
    row = await vod_row(engine, "3001")
    assert row.channel == "bravo" and row.title == "Finale" and row.job_id is not None
    assert f"job {row.job_id}" in added.output and "added" in added.output
    again = await vod(["add", "3001"])
    assert again.exit_code == 0 and "already known" in again.output and f"job {row.job_id}" in again.output

    bad = await vod(["add", "https://example.com/videos/1"])
    assert bad.exit_code == 2 and "twitch.tv/videos" in bad.output
    unknown = await vod(["add", "3002"], env={"TWITCH_CHANNEL": ""})
    assert unknown.exit_code == 1 and "Twitch has no VOD 3002" in unknown.output
    no_lookup = await vod(["add", "3002"], env={"TWITCH_CHANNEL": "", "TWITCH_CLIENT_ID": ""})
    assert no_lookup.exit_code == 1 and "pass --channel NAME" in no_lookup.output
    # Found the way the server would: the video's owner on Twitch.
    looked_up = await vod(["add", "771"], env={"TWITCH_CHANNEL": ""})
    assert looked_up.exit_code == 0, looked_up.output
    found = await vod_row(engine, "771")
    assert found.channel == "delta" and found.title == "Delta #1" and found.date is not None
    assert "no worker is running" in looked_up.output, "queued work nobody serves is said out loud"

    await add_vod(engine, "3003", processing_error="yt-dlp: HTTP Error 404")
    listed = await vod(["list"])
    assert listed.exit_code == 0 and "3001" in listed.output and "3003" in listed.output
    errored = await vod(["list", "--status", "errored"])
    assert "3003" in errored.output and "3001" not in errored.output
    assert (await vod(["list", "--channel", "bravo"])).output.count("300") == 1
    assert (await vod(["list", "--status", "stuck"])).exit_code == 2

    cancelled = await vod(["cancel", "3001"])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    nothing = await vod(["cancel", "3001"])
    assert nothing.exit_code == 1 and "nothing queued or running" in nothing.output
    retried = await vod(["retry", "3001"])
    assert retried.exit_code == 0 and "requeued" in retried.output
    async with engine.connect() as conn:
        status = (await conn.execute(select(tasks.c.status).where(tasks.c.job_id == row.job_id))).scalar()
    assert status == "queued"
    assert (await vod(["retry", "3001"])).exit_code == 1  # nothing failed any more
    missing = await vod(["retry", "9999"])
    assert missing.exit_code == 1 and "not found" in missing.output
    no_job = await vod(["retry", "3003"])
    assert no_job.exit_code == 1 and "no job yet" in no_job.output


async def test_add_wait_without_a_worker_works_in_process_and_gives_up_after_timeout(engine, unused_tcp_port):
    # Nothing listens there: the in-process download fails fast and is retried until the timeout.
    env = {"TWITCH_VIDEO_URL_TEMPLATE": f"http://127.0.0.1:{unused_tcp_port}/{{id}}.m3u8", "TWITCH_CLIENT_ID": ""}
    result = await vod(["add", "3101", "--wait", "--timeout", "2"], env=env)
    assert result.exit_code == 1 and "still running after 2s" in result.output
    assert "downloading in this process" in result.output
    row = await vod_row(engine, "3101")
    assert row.channel == "alpha" and row.download_retries >= 1  # TWITCH_CHANNEL; the work was tried


async def test_channels_commands(engine):
    added = await vod(["channels", "add", "Gamma"])
    assert added.exit_code == 0 and "watching gamma" in added.output
    assert (await vod(["channels", "add", "gamma"])).exit_code == 1
    invalid = await vod(["channels", "add", "not/a/login"])
    assert invalid.exit_code == 1 and "invalid Twitch channel name" in invalid.output
    listed = await vod(["channels", "list"])
    assert listed.exit_code == 0 and "gamma" in listed.output and "cli" in listed.output
    assert "watching" in listed.output
    paused = await vod(["channels", "pause", "gamma"])
    assert paused.exit_code == 0 and "paused gamma" in paused.output
    assert "paused" in (await vod(["channels", "list"])).output
    resumed = await vod(["channels", "resume", "gamma"])
    assert resumed.exit_code == 0 and "resumed gamma" in resumed.output
    unknown = await vod(["channels", "pause", "nobody"])
    assert unknown.exit_code == 1 and "not watched" in unknown.output
    assert "vod" in listed.output  # record_mode column
    moded = await vod(["channels", "mode", "gamma", "live"])
    assert moded.exit_code == 0 and "record mode live" in moded.output
    assert "live" in (await vod(["channels", "list"])).output
    assert (await vod(["channels", "mode", "gamma", "sometimes"])).exit_code == 1
    assert (await vod(["channels", "mode", "nobody", "both"])).exit_code == 1
    removed = await vod(["channels", "remove", "GAMMA"])
    assert removed.exit_code == 0 and "stopped watching gamma" in removed.output
    gone = await vod(["channels", "remove", "gamma"])
    assert gone.exit_code == 1 and "not watched" in gone.output
    assert "gamma" not in (await vod(["channels", "list", "--all"])).output


@pytest.fixture
def fake_twitch() -> FakeTwitch:
    twitch = FakeTwitch()
    twitch.add_channel("delta")
    newest = datetime.now(UTC) - timedelta(hours=1)
    for index in range(3):
        twitch.add_video(
            "delta", title=f"Delta #{index}", created_at=newest - timedelta(days=index), video_id=f"77{index}"
        )
    return twitch


@pytest.fixture
def twitch_server(fake_twitch) -> Iterator[ServedApp]:
    with serve(fake_twitch.app) as served:
        yield served


@pytest.fixture
def settings(archive_env, monkeypatch, fake_twitch, twitch_server):
    from reelhouse.config import Settings

    for name, value in {
        "TWITCH_CLIENT_ID": fake_twitch.client_id,
        "TWITCH_CLIENT_SECRET": fake_twitch.client_secret,
        "TWITCH_API_BASE": f"{twitch_server.base_url}/helix",
        "TWITCH_AUTH_BASE": f"{twitch_server.base_url}/oauth2",
    }.items():
        monkeypatch.setenv(name, value)
    return Settings()


async def test_scan_wait_follows_a_real_worker(engine, runtime):
    # The worker (this event loop) claims what the CLI (its own thread and loop) queues.
    worker = Worker(
        engine,
        runtime.registry,
        WorkerOptions(
            worker_id=f"cli-test-{os.getpid()}",
            concurrency=2,
            lease=timedelta(seconds=10),
            poll_interval=0.1,
            shutdown_grace=5,
        ),
    )
    running = asyncio.create_task(worker.run())
    try:
        result = await vod(["scan", "--channel", "delta", "--wait", "--timeout", "60"])
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, timeout=30)
    assert result.exit_code == 0, result.output
    assert "vod.discover for delta" in result.output and "succeeded" in result.output
    async with engine.connect() as conn:
        found = set((await conn.execute(select(vods.c.twitch_vod_id).where(vods.c.channel == "delta"))).scalars())
    assert found == {"770", "771", "772"}
    bad = await vod(["scan", "--channel", "no such"])
    assert bad.exit_code == 1 and "invalid Twitch channel name" in bad.output
