"""Live recording of a watched channel against the fake Twitch live edge (GQL token, usher,
a sliding-window media playlist with stitched ads and discontinuities), on SQLite and
PostgreSQL, with real ffmpeg/ffprobe:
- auto mode sees the channel go live; the stream is recorded from its first segment, no ad
  segment is even fetched, the MP4's duration matches the broadcast's within 2 s, and after
  reconciliation the recording is the real VOD's file (next to its chat), so the VOD's download
  task goes straight to the upload;
- a worker SIGKILLed mid-recording: the next one continues, losing at most one segment;
- `both`: the VOD is downloaded too and the better (here: complete) copy is kept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from reelhouse.archive.chat.auto import LiveStart
from reelhouse.archive.chat.service import run_chat_service
from reelhouse.archive.live.task import live_trigger
from reelhouse.archive.models import chat_messages, live_recordings, vods
from reelhouse.archive.plugin import _live_status
from reelhouse.core.db.models import tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.media.probe import probe_media
from tests.archive_support import archive_services
from tests.fakes.hls_origin import generate_hls
from tests.fakes.twitch_irc import FakeTwitchIrcServer
from tests.fakes.twitch_live import Broadcast, read_segments

from .conftest import apply_env, wait_for

WORKER = Path(__file__).with_name("archive_worker.py")
KINDS = ["vod.live_record", "chat.reconcile", "vod.download"]


@pytest.fixture(scope="session")
def live_sources(tmp_path_factory):
    """Two content parts of 10 s (separate encodes: timestamps restart between them, as after
    an encoder restart) and 3 s of ads at another size, all in 1 s MPEG-TS segments."""
    root = tmp_path_factory.mktemp("live")
    first = generate_hls(root / "a", duration=10, segment_seconds=1, size="320x180", fps=10)
    second = generate_hls(root / "b", duration=10, segment_seconds=1, size="320x180", fps=10)
    ads = generate_hls(root / "ads", duration=3, segment_seconds=1, size="160x90", fps=10)
    return read_segments(first), read_segments(second), read_segments(ads)


def broadcast_of(sources, *, speed: float = 1.0, window: int = 6, parts: int = 2) -> Broadcast:
    first, second, ads = sources
    return Broadcast(
        parts=[first, second][:parts],
        ad_segments=ads,
        preroll=1,  # titled Amazon|..., plus its DATERANGE
        midrolls={4: 2},  # DATERANGE only
        window=window,
        speed=speed,
        linger=1.0,
    )


@pytest.fixture
async def irc_server():
    async with FakeTwitchIrcServer() as server:
        yield server


@pytest.fixture
def live_env(monkeypatch, archive_env, twitch_server, irc_server):
    apply_env(
        monkeypatch,
        archive_env,
        TWITCH_CHANNEL="dallas",
        TWITCH_GQL_URL=f"{twitch_server.base_url}/gql",
        TWITCH_USHER_BASE=twitch_server.base_url,
        LIVE_RECORD_END_GRACE="1s",
        LIVE_SETTLE_RETRY="0.5s",
        CHAT_AUTO_START="1",
        CHAT_AUTO_POLL_INTERVAL="0.2s",
        VOD_RECONCILE_DELAY="0.3s",
        CHAT_RECONCILE_RETRY="0.2s",
        CHAT_RECONCILE_RETRY_MAX="0.5s",
        CHAT_FLUSH_INTERVAL_MS="50",
        TWITCH_IRC_HOST=irc_server.host,
        TWITCH_IRC_PORT=str(irc_server.port),
        TWITCH_IRC_TLS="0",
        YOUTUBE_UPLOAD_ENABLED="0",
    )
    return archive_env


def worker_for(runtime, lease: float = 10.0) -> Worker:
    return Worker(
        runtime.engine,
        runtime.registry,
        WorkerOptions(
            worker_id=f"live-{os.getpid()}-{id(runtime)}",
            concurrency=4,
            lease=timedelta(seconds=lease),
            poll_interval=0.1,
            cancel_poll_interval=0.2,
            shutdown_grace=5,
            kinds=KINDS,
        ),
    )


async def recording(engine, placeholder: str | None = None):
    async with engine.connect() as conn:
        query = select(live_recordings)
        if placeholder is not None:
            query = query.where(live_recordings.c.placeholder == placeholder)
        return (await conn.execute(query)).first()


async def vod_row(engine, vod_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()


@pytest.mark.slow
async def test_a_watched_channel_going_live_is_recorded_from_its_first_segment_without_ads(
    make_runtime, live_env, twitch, irc_server, live_sources, origin
):
    twitch.add_channel("dallas")
    runtime = make_runtime()
    services = archive_services(runtime)
    engine = runtime.engine
    await services.watched_channels()
    assert await services.live.set_record_mode("dallas", "live")
    broadcast = broadcast_of(live_sources, speed=2.0, window=10)  # 1 s segments, played out twice as fast
    stop = asyncio.Event()
    worker = worker_for(runtime)
    chat = asyncio.create_task(run_chat_service(services.chat, stop))
    working = asyncio.create_task(worker.run())
    try:
        await irc_server.wait_until_joined(["dallas"], timeout=10)
        live = twitch.start_broadcast("dallas", broadcast, title="Live test")
        started_at = datetime.fromisoformat(live["started_at"].replace("Z", "+00:00"))
        placeholder = f"live-{int(started_at.timestamp())}"
        await wait_for(lambda: _has(recording(engine, placeholder)), 10, "the recording to start")
        said = [await irc_server.send_privmsg("dallas", f"hello {i}") for i in range(3)]
        status = await _live_status(services)(runtime)
        assert [r["placeholder"] for r in status["live_recording"]["active"]] == [placeholder]
        await wait_for(
            lambda: _state_in(engine, placeholder, {"finished", "kept"}),
            broadcast.timeline_seconds + 40,
            "the recording to finish",
            interval=0.25,
        )
        # The stream's archive appears on Helix; reconciliation moves chat and links the recording.
        twitch.add_video("dallas", video_id="7001", title="Live test", created_at=started_at + timedelta(seconds=2))
        await wait_for(lambda: _state_in(engine, placeholder, {"kept"}), 30, "the recording to become the VOD's file")
        row = await recording(engine, placeholder)
        vod = await vod_row(engine, "7001")
        # Downloading the VOD is not needed: the download task goes straight to the upload.
        await services.vod_jobs.enqueue("7001")
        await wait_for(lambda: _download_done(engine), 30, "the download task")
        vod_after = await vod_row(engine, "7001")
        assert (await _live_status(services)(runtime))["live_recording"]["active"] == []
        async with engine.connect() as conn:
            moved = (
                await conn.execute(select(chat_messages.c.message_id).where(chat_messages.c.vod_id == "7001"))
            ).all()
    finally:
        stop.set()
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(chat, working), timeout=30)

    edge = twitch.live_edge
    content = [i for i, e in enumerate(broadcast.entries) if e.kind == "content"]
    assert edge.fetched("dallas", "ad") == []  # ads were recognised from the playlist alone
    assert sorted(set(edge.fetched("dallas", "content"))) == content  # the first one included
    assert (row.segments, row.ad_segments, row.lost_segments, row.first_elapsed) == (20, 3, 0, 0.0)
    assert row.discontinuities >= 2  # out of the ad breaks and between the two content parts
    assert row.vod_id == "7001" and row.mode == "live"
    assert vod.download_state == "complete" and vod.downloaded_path == row.path
    assert Path(vod.downloaded_path).name == "twitch_7001.mp4"
    info = await probe_media(vod.downloaded_path)
    print(f"live: {info.duration:.2f}s recorded of a {broadcast.content_seconds:.2f}s broadcast")
    assert abs(info.duration - broadcast.content_seconds) <= 2.0, (info.duration, broadcast.content_seconds)
    assert (info.video.width, info.video.height) == (320, 180) and info.audio is not None
    assert vod_after.downloaded_path == vod.downloaded_path and origin.requests == []  # no yt-dlp fetch
    assert {m.message_id for m in said} <= {r.message_id for r in moved}


@pytest.mark.slow
async def test_live_recording_needs_no_chat_the_live_watch_sees_the_channel_go_live(
    make_runtime, live_env, twitch, live_sources, monkeypatch
):
    """Chat off (no auto mode, no IRC): the runtime's own services (as `reelhouse serve` runs
    them) still see a `live` channel go live through Helix and record it; a `vod` channel
    live at the same time is not recorded."""
    apply_env(monkeypatch, live_env, CHAT_AUTO_START="0", LIVE_RECORD_POLL_INTERVAL="0.2s")
    twitch.add_channel("dallas")
    twitch.add_channel("houston")
    runtime = make_runtime()
    services = archive_services(runtime)
    engine = runtime.engine
    assert await services.channels.add_channel("houston")
    assert sorted(await services.watched_channels()) == ["dallas", "houston"]
    assert await services.live.set_record_mode("dallas", "live")
    broadcast = broadcast_of(live_sources, speed=2.0, window=10, parts=1)
    stop = asyncio.Event()
    worker = worker_for(runtime)
    running = [asyncio.create_task(service(runtime, stop)) for service in runtime.services]
    working = asyncio.create_task(worker.run())
    try:
        twitch.set_live("houston", title="Not recorded live")
        live = twitch.start_broadcast("dallas", broadcast, title="No chat")
        started_at = datetime.fromisoformat(live["started_at"].replace("Z", "+00:00"))
        placeholder = f"live-{int(started_at.timestamp())}"
        await wait_for(lambda: _has(recording(engine, placeholder)), 10, "the recording to start")
        assert services.chat.status()["mode"] == "off" and services.chat.recorder is None
        await wait_for(
            lambda: _state_in(engine, placeholder, {"finished", "kept"}),
            broadcast.timeline_seconds + 40,
            "the recording to finish",
            interval=0.25,
        )
        # The placeholder is reconciled without chat: the recording becomes the VOD's file.
        twitch.add_video("dallas", video_id="7003", title="No chat", created_at=started_at + timedelta(seconds=2))
        await wait_for(lambda: _state_in(engine, placeholder, {"kept"}), 30, "the recording to become the VOD's file")
    finally:
        stop.set()
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(*running, working), timeout=30)
    row = await recording(engine, placeholder)
    async with engine.connect() as conn:
        channels_recorded = (await conn.execute(select(live_recordings.c.channel))).scalars().all()
    assert channels_recorded == ["dallas"]  # houston's record_mode is vod
    assert row.vod_id == "7003" and row.first_elapsed == 0.0 and row.lost_segments == 0
    content = [i for i, e in enumerate(broadcast.entries) if e.kind == "content"]
    assert sorted(set(twitch.live_edge.fetched("dallas", "content"))) == content  # from the first one
    info = await probe_media(row.path)
    print(f"no chat: {info.duration:.2f}s recorded of a {broadcast.content_seconds:.2f}s broadcast")
    assert abs(info.duration - broadcast.content_seconds) <= 2.0, (info.duration, broadcast.content_seconds)


@pytest.mark.slow
async def test_a_worker_killed_mid_recording_is_continued_by_the_next(
    make_runtime, live_env, twitch, live_sources, monkeypatch
):
    apply_env(monkeypatch, live_env, CHAT_AUTO_START="0")
    twitch.add_channel("dallas")
    runtime = make_runtime()
    services = archive_services(runtime)
    engine = runtime.engine
    await services.watched_channels()
    await services.live.set_record_mode("dallas", "live")
    broadcast = broadcast_of(live_sources, window=10)
    first = await _ready_worker("live-a")
    try:
        live = twitch.start_broadcast("dallas", broadcast)
        started_at = datetime.fromisoformat(live["started_at"].replace("Z", "+00:00"))
        placeholder = f"live-{int(started_at.timestamp())}"
        await live_trigger(services)(LiveStart("dallas", placeholder, started_at, live["id"]))
        await wait_for(lambda: _segments_at_least(engine, placeholder, 1), 30, "the first segment", interval=0.05)
        # The next worker is up (idle: the task is leased) before the first one dies.
        second = await _ready_worker("live-b")
        try:
            await wait_for(lambda: _segments_at_least(engine, placeholder, 6), 30, "six segments", interval=0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed_at = (await recording(engine, placeholder)).segments
            await wait_for(
                lambda: _state_in(engine, placeholder, {"finished"}),
                broadcast.timeline_seconds + 40,
                "the second worker to finish the recording",
                interval=0.25,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    row = await recording(engine, placeholder)
    async with engine.connect() as conn:
        task = (await conn.execute(select(tasks).where(tasks.c.kind == "vod.live_record"))).first()
    assert task.status == "succeeded" and task.lost_attempts == 1 and task.fence == 2  # two runs
    assert 6 <= killed_at < 20
    assert row.lost_segments <= 1 and row.segments >= 19 and row.first_elapsed == 0.0
    info = await probe_media(row.path)
    print(f"crash: killed after {killed_at} segments; lost {row.lost_segments}; {info.duration:.2f}s recorded")
    assert abs(info.duration - broadcast.content_seconds) <= 2.0, (info.duration, broadcast.content_seconds)


@pytest.mark.slow
async def test_both_mode_keeps_the_better_copy(make_runtime, live_env, twitch, live_sources, origin, monkeypatch):
    apply_env(monkeypatch, live_env, CHAT_AUTO_START="0")
    twitch.add_channel("dallas")
    runtime = make_runtime()
    services = archive_services(runtime)
    engine = runtime.engine
    await services.watched_channels()
    await services.live.set_record_mode("dallas", "both")
    broadcast = broadcast_of(live_sources, speed=2.0, window=10, parts=1)  # 10 s
    # Twitch's archive of the stream is cut short: 3 s (and a smaller picture).
    origin.add_vod("7002", live_sources[2][0][0].parent)
    live = twitch.start_broadcast("dallas", broadcast)
    started_at = datetime.fromisoformat(live["started_at"].replace("Z", "+00:00"))
    placeholder = f"live-{int(started_at.timestamp())}"
    await live_trigger(services)(LiveStart("dallas", placeholder, started_at, live["id"]))
    now = utcnow()
    async with engine.begin() as conn:  # discovery lists the archive while the stream runs
        await conn.execute(
            insert(vods).values(
                channel="dallas",
                twitch_vod_id="7002",
                title="Both",
                date=started_at + timedelta(seconds=3),
                created_at=now,
                updated_at=now,
            )
        )
    await services.vod_jobs.enqueue("7002")
    worker = worker_for(runtime)
    working = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: _download_done(engine), broadcast.timeline_seconds + 60, "the download", interval=0.25)
    finally:
        worker.request_stop()
        await asyncio.wait_for(working, timeout=30)
    row = await recording(engine, placeholder)
    vod = await vod_row(engine, "7002")
    assert row.state == "kept" and row.vod_id == "7002"
    assert [name for _, name, status in origin.requests if name.endswith(".ts") and status == 200]  # downloaded
    assert vod.download_state == "complete" and Path(vod.downloaded_path).name == "twitch_7002.mp4"
    info = await probe_media(vod.downloaded_path)
    assert abs(info.duration - broadcast.content_seconds) <= 2.0  # the live copy, not the 10 s VOD
    leftovers = sorted(p.name for p in Path(vod.downloaded_path).parent.iterdir())
    assert leftovers == ["twitch_7002.mp4"]


async def _ready_worker(name: str) -> subprocess.Popen:
    """A worker process (archive_worker.py, lease 2 s) that has said it is ready."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), name, "2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=60)
    assert line.strip() == "ready", line
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # never let its output block it
    return proc


async def _has(query) -> bool:
    return (await query) is not None


async def _state_in(engine, placeholder: str, states: set[str]) -> bool:
    row = await recording(engine, placeholder)
    if row is not None and row.state == "failed":
        raise AssertionError(f"recording failed: {row.error}")
    return row is not None and row.state in states


async def _segments_at_least(engine, placeholder: str, count: int) -> bool:
    row = await recording(engine, placeholder)
    return row is not None and row.segments >= count


async def _download_done(engine) -> bool:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(tasks.c.status, tasks.c.last_error).where(tasks.c.kind == "vod.download"))
        ).first()
    if row is not None and row.status in ("dead", "failed"):
        raise AssertionError(f"download failed: {row.last_error}")
    return row is not None and row.status == "succeeded"


_ = UTC


async def test_playback_tokens_usher_and_the_edge_answer_like_twitch(twitch, twitch_server, live_sources):
    from reelhouse.archive.twitch.playback import Offline, TwitchPlayback
    from reelhouse.core.providers.errors import NotFound, Rejected

    twitch.add_channel("dallas")
    base = twitch_server.base_url
    playback = TwitchPlayback(gql_url=f"{base}/gql", usher_base=base)
    try:
        with pytest.raises(NotFound):  # no such channel: no token at all
            await playback.access_token("nobody")
        twitch.start_broadcast("dallas", broadcast_of(live_sources, speed=4.0, window=4))
        value, signature = await playback.access_token("dallas")
        assert '"channel":"dallas"' in value and len(signature) == 40
        source = await playback.rendition("dallas")
        assert (source.group, source.resolution, source.broadcast_id) == (
            "chunked",
            "320x180",
            twitch.live_edge.broadcasts["dallas"].broadcast_id,
        )
        await asyncio.sleep(1.0)
        text, _ = await playback.media_playlist(source.url)
        assert "#EXT-X-TWITCH-PREFETCH:" in text and 'CLASS="twitch-stitched-ad"' in text
        wrong = TwitchPlayback(gql_url=f"{base}/gql", usher_base=base, client_id="not-the-web-client")
        try:
            with pytest.raises(Rejected):
                await wrong.access_token("dallas")
        finally:
            await wrong.aclose()
        twitch.live_edge.broadcasts["dallas"].linger = 0.0
        twitch.live_edge.broadcasts["dallas"].speed = 1000.0  # the broadcast is over
        with pytest.raises(Offline):
            await playback.rendition("dallas")
        with pytest.raises(Offline):
            await playback.media_playlist(source.url)
    finally:
        await playback.aclose()
