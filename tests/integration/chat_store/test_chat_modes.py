"""Manual mode (the VOD row is created: vod-tender's FK bug), reconciliation edge cases against
the Helix fake (window expiry, VOD found by discovery first, stream id over closeness, repeated
runs), and the chat metrics being moved by the code that records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text

from reelhouse.archive.chat.reconcile import ReconcileRequest, choose_vod, reconcile
from reelhouse.archive.chat.service import run_chat_service
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.chat.writer import ChatWriter, GapRow
from reelhouse.archive.models import chat_gaps, chat_messages, vods
from reelhouse.archive.plugin import setup
from reelhouse.archive.store import ChannelStore, VodStore, new_vod_row
from reelhouse.archive.twitch.helix import HelixClient, HelixVideo
from reelhouse.config import Settings
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.runtime import build_runtime
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import serve
from tests.integration.chat_store.conftest import T0, count_messages, make_vod, seed_chat, start_recording, wait_for


def video(vid: str, created_at: datetime, stream_id: str | None = None) -> HelixVideo:
    return HelixVideo(
        id=vid,
        user_id="1",
        user_login="dallas",
        title=f"VOD {vid}",
        created_at=created_at,
        url=f"https://www.twitch.tv/videos/{vid}",
        duration=3600,
        type="archive",
        stream_id=stream_id,
    )


def test_choose_vod_prefers_the_stream_id_then_the_closest_start():
    started = datetime(2024, 5, 1, 18, 0, tzinfo=UTC)
    window = timedelta(minutes=10)
    near, exact = video("1", started + timedelta(seconds=5)), video("2", started + timedelta(minutes=8), "s-42")
    assert choose_vod([near, exact], started, "s-42", window) is exact
    assert choose_vod([near, exact], started, None, window) is near
    assert choose_vod([video("3", started - timedelta(minutes=11))], started, None, window) is None
    before, after = video("4", started - timedelta(seconds=3)), video("5", started + timedelta(seconds=3))
    assert choose_vod([before, after], started, None, window) is after  # a tie: not before the start


@pytest.fixture
def helix():
    fake = FakeTwitch()
    fake.add_channel("dallas")
    with serve(fake.app) as served:
        yield (
            fake,
            HelixClient(
                fake.client_id,
                fake.client_secret,
                api_base=f"{served.base_url}/helix",
                auth_base=f"{served.base_url}/oauth2",
            ),
        )


async def test_reconcile_retries_then_gives_up_after_the_window_keeping_the_chat(engine, helix):
    fake, client = helix
    await make_vod(engine, "live-1", started_at=T0, placeholder=True)
    await seed_chat(engine, "live-1", [1.0, 2.0], prefix="p")
    fake.add_video("dallas", video_id="77", created_at=T0 - timedelta(hours=3))  # an older stream's VOD
    request = ReconcileRequest("live-1", "dallas", T0, T0 + timedelta(hours=1))
    options = {"match_window": timedelta(minutes=10), "give_up_after": timedelta(hours=2)}
    async with client:
        with pytest.raises(TransientError):
            await reconcile(ChannelStore(engine), client, request, now=T0 + timedelta(hours=2), **options)
        with pytest.raises(PermanentError, match="reelhouse chat reconcile live-1"):
            await reconcile(ChannelStore(engine), client, request, now=T0 + timedelta(hours=3, seconds=1), **options)
    assert await count_messages(engine, vod_id="live-1") == 2
    async with engine.connect() as conn:
        assert (await conn.execute(select(vods.c.is_placeholder).where(vods.c.twitch_vod_id == "live-1"))).scalar()


async def test_reconcile_keeps_the_row_discovery_made_and_moves_chat_and_gaps_once(engine, helix):
    fake, client = helix
    await make_vod(engine, "live-1", started_at=T0, placeholder=True)
    ids = await seed_chat(engine, "live-1", [0.0, 10.0, 20.0], prefix="p")
    async with ChatWriter(engine) as writer:
        writer.submit_gap(GapRow("dallas", "live-1", T0, T0 + timedelta(seconds=2), "reset"))
    listed = fake.add_video("dallas", video_id="88", title="Real title", created_at=T0 + timedelta(seconds=4))
    async with client:
        video = HelixVideo.model_validate(listed)
        await VodStore(engine).insert_new(  # discovery was first
            [new_vod_row(video.id, "dallas", title=video.title, date=video.created_at)]
        )
        request = ReconcileRequest("live-1", "dallas", T0, T0 + timedelta(minutes=5))
        options = {"match_window": timedelta(minutes=10), "give_up_after": timedelta(hours=1)}
        result = await reconcile(ChannelStore(engine), client, request, **options)
        assert (result.vod_id, result.messages, result.created_vod, result.shift_seconds) == ("88", 3, False, 4.0)
        assert await reconcile(ChannelStore(engine), client, request, **options) is None  # a repeated run is a no-op
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(chat_messages.c.message_id, chat_messages.c.rel_timestamp)
                .where(chat_messages.c.vod_id == "88")
                .order_by(chat_messages.c.id)
            )
        ).all()
        gap_vods = (await conn.execute(select(chat_gaps.c.vod_id))).scalars().all()
        kept = (
            await conn.execute(select(vods.c.title, vods.c.is_placeholder).where(vods.c.twitch_vod_id == "88"))
        ).one()
        placeholder = (await conn.execute(select(vods.c.id).where(vods.c.twitch_vod_id == "live-1"))).first()
    assert [(r.message_id, r.rel_timestamp) for r in rows] == list(zip(ids, [-4.0, 6.0, 16.0], strict=True))
    assert gap_vods == ["88"] and tuple(kept) == ("Real title", False) and placeholder is None


async def test_manual_mode_creates_its_vod_row_and_records_relative_to_vod_start(
    engine, irc_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("TWITCH_CHANNEL", "dallas")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    runtime = build_runtime(Settings(), engine=engine, load_domains=False)
    vod_start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    chat = ChatSettings(
        vod_id="manual-1",
        vod_start=vod_start,
        irc_host=irc_server.host,
        irc_port=irc_server.port,
        irc_tls=False,
        flush_interval_ms=50,
    )
    domain = setup(runtime, chat_settings=chat)
    assert "record_chat" in [s.__name__ for s in runtime.services]  # configured, so `serve` starts it
    stop = asyncio.Event()
    assert domain.services.chat is not None
    service = asyncio.create_task(run_chat_service(domain.services.chat, stop))
    await irc_server.wait_until_joined(["dallas"], timeout=10)
    sent = [await irc_server.send_privmsg("dallas", f"hello {i}") for i in range(5)]
    await wait_until_stored(engine, "manual-1", 5)
    stop.set()
    await asyncio.wait_for(service, timeout=10)
    async with engine.connect() as conn:
        vod = (await conn.execute(select(vods).where(vods.c.twitch_vod_id == "manual-1"))).one()
        rows = (await conn.execute(select(chat_messages).order_by(chat_messages.c.id))).all()
        # The runbook's health query (seed 001) works as written.
        runbook = (
            await conn.execute(
                text(
                    "SELECT vod_id, COUNT(*), MAX(timestamp) FROM chat_messages "
                    "GROUP BY vod_id ORDER BY MAX(timestamp) DESC LIMIT 5"
                )
            )
        ).all()
    assert (vod.channel, vod.date, vod.is_placeholder) == ("dallas", vod_start, False)
    assert [r.message_id for r in rows] == [m.message_id for m in sent]
    for row, message in zip(rows, sent, strict=True):
        expected = int(message.sent_at.timestamp() * 1000) / 1000 - vod_start.timestamp()
        assert row.rel_timestamp == pytest.approx(expected, abs=1e-3)
    assert runbook[0][0] == "manual-1" and runbook[0][1] == 5


def test_register_starts_no_recorder_when_chat_is_not_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    runtime = build_runtime(Settings(), load_domains=False)
    setup(runtime, chat_settings=ChatSettings())
    assert "record_chat" not in [s.__name__ for s in runtime.services]
    assert "chat.reconcile" in runtime.registry


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_metrics_are_moved_by_recording(engine, irc_server, make_client):
    await make_vod(engine, "v1", channel="metricsch")
    before = {
        name: sample(name, labels)
        for name, labels in [
            ("chat_messages_recorded_total", {"channel": "metricsch"}),
            ("chat_reconnections_total", None),
            ("chat_messages_late_total", None),
            ("chat_batch_write_seconds_count", None),
            ("chat_gaps_total", {"channel": "metricsch"}),
        ]
    }
    client = make_client(["metricsch"])
    writer = ChatWriter(engine, flush_interval=0.05, late_after=0.0)  # every row counts as late
    _, running = await start_recording(client, writer, "metricsch", "v1")
    for index in range(10):
        await irc_server.send_privmsg("metricsch", f"m{index}")
    await wait_for(lambda: writer.written == 10)
    await irc_server.drop_clients()
    await irc_server.wait_until_joined(["metricsch"], timeout=5)  # the new connection
    await irc_server.send_privmsg("metricsch", "after the reconnect")
    await wait_for(lambda: writer.written == 11)
    await client.stop()
    await running
    await writer.stop()
    delta = {
        name: sample(name, labels) - before[name]
        for name, labels in [
            ("chat_messages_recorded_total", {"channel": "metricsch"}),
            ("chat_reconnections_total", None),
            ("chat_messages_late_total", None),
            ("chat_batch_write_seconds_count", None),
            ("chat_gaps_total", {"channel": "metricsch"}),
        ]
    }
    assert delta["chat_messages_recorded_total"] == 11 and delta["chat_messages_late_total"] == 11
    assert delta["chat_reconnections_total"] == 1 and delta["chat_gaps_total"] == 1
    assert delta["chat_batch_write_seconds_count"] >= 2


async def wait_until_stored(engine, vod_id: str, count: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await count_messages(engine, vod_id=vod_id) < count:
            await asyncio.sleep(0.05)
