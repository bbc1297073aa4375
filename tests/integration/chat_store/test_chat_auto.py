"""Auto mode end to end, against the wire-level fakes of Helix and Twitch IRC, with the job
engine's worker running the reconciliation: live -> placeholder recording -> offline -> the
real VOD appears -> chat re-keyed with shifted timestamps; a second stream that starts while
the first one waits for its VOD is recorded too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from reelhouse.archive.chat.service import run_chat_service
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.models import chat_messages, vods
from reelhouse.archive.plugin import setup
from reelhouse.config import Settings
from reelhouse.core.db.models import tasks
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from tests.archive_support import archive_services
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import serve
from tests.integration.chat_store.conftest import count_messages, wait_for


def whole_seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)  # Helix's started_at/created_at have second precision


@pytest.fixture
def fake_twitch():
    fake = FakeTwitch()
    fake.add_channel("dallas")
    with serve(fake.app) as served:
        yield fake, served.base_url


@pytest.fixture
def chat_runtime(engine, fake_twitch, irc_server, monkeypatch, tmp_path):
    _, base_url = fake_twitch
    for name, value in {
        "TWITCH_CHANNEL": "dallas",
        "TWITCH_CLIENT_ID": "fake-client-id",
        "TWITCH_CLIENT_SECRET": "fake-client-secret",
        "TWITCH_API_BASE": f"{base_url}/helix",
        "TWITCH_AUTH_BASE": f"{base_url}/oauth2",
        "DATA_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    runtime = build_runtime(Settings(), engine=engine, load_domains=False)
    chat = ChatSettings(
        auto_start=True,
        auto_poll_interval=timedelta(seconds=0.2),
        reconcile_delay=timedelta(seconds=0.3),
        reconcile_retry=timedelta(seconds=0.2),
        reconcile_retry_max=timedelta(seconds=0.4),
        irc_host=irc_server.host,
        irc_port=irc_server.port,
        irc_tls=False,
        flush_interval_ms=50,
    )
    setup(runtime, chat_settings=chat)
    return runtime


async def rows_of(engine, vod_id: str):
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(chat_messages).where(chat_messages.c.vod_id == vod_id).order_by(chat_messages.c.rel_timestamp)
            )
        ).all()


async def vod_row(engine, vod_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()


async def test_auto_mode_records_reconciles_and_records_the_next_stream(engine, chat_runtime, fake_twitch, irc_server):
    fake, _ = fake_twitch
    stop = asyncio.Event()
    worker = Worker(engine, chat_runtime.registry, WorkerOptions(poll_interval=0.05, kinds=["chat.reconcile"]))
    services = archive_services(chat_runtime)
    service = asyncio.create_task(run_chat_service(services.chat, stop))
    working = asyncio.create_task(worker.run())
    try:
        await irc_server.wait_until_joined(["dallas"], timeout=10)
        first_start = whole_seconds(datetime.now(UTC) - timedelta(minutes=30))
        # Chat before Helix reports the stream (the poll lags) is kept by the pre-roll buffer.
        early = [await irc_server.send_privmsg("dallas", f"early {i}") for i in range(3)]
        fake.set_live("dallas", title="First stream", started_at=first_start)
        first_placeholder = f"live-{int(first_start.timestamp())}"
        await wait_for_vod(engine, first_placeholder)
        placeholder = await vod_row(engine, first_placeholder)
        assert placeholder.is_placeholder and placeholder.title == "LIVE: First stream"
        assert placeholder.date == first_start
        during = [await irc_server.send_privmsg("dallas", f"first {i}") for i in range(20)]
        await wait_until(lambda: count_messages(engine, vod_id=first_placeholder), 23)
        # The download queue never sees a placeholder.
        assert await services.vod_jobs.enqueue_pending("dallas") == []

        fake.set_offline("dallas")
        await wait_for(lambda: "dallas" not in chat_runtime_sessions(chat_runtime), timeout=10)
        # No archive yet: the task retries; meanwhile the next stream starts and is recorded.
        second_start = whole_seconds(datetime.now(UTC))
        fake.set_live("dallas", title="Second stream", started_at=second_start)
        second_placeholder = f"live-{int(second_start.timestamp())}"
        await wait_for_vod(engine, second_placeholder)
        second = [await irc_server.send_privmsg("dallas", f"second {i}") for i in range(10)]
        await wait_until(lambda: count_messages(engine, vod_id=second_placeholder), 10)
        await wait_until(lambda: reconcile_attempts(engine, first_placeholder), 2, at_least=True)
        assert await vod_row(engine, first_placeholder) is not None

        fake.add_video(
            "dallas",
            video_id="9001",
            title="First stream",
            created_at=first_start + timedelta(seconds=7),
            duration="30m5s",
        )
        await wait_for_gone(engine, first_placeholder)
        moved = await rows_of(engine, "9001")
        assert [r.message_id for r in moved] == [m.message_id for m in early + during]
        for row in moved:  # rel is now relative to the VOD's created_at: shifted by 7 s
            assert row.rel_timestamp == pytest.approx(row.timestamp.timestamp() - first_start.timestamp() - 7, abs=1e-3)
        real = await vod_row(engine, "9001")
        assert (real.is_placeholder, real.channel, real.duration_seconds, real.date) == (
            False,
            "dallas",
            1805,
            first_start + timedelta(seconds=7),
        )
        assert await services.vod_jobs.enqueue_pending("dallas") != []  # the real VOD goes to the pipeline

        fake.set_offline("dallas")
        fake.add_video("dallas", video_id="9002", title="Second stream", created_at=second_start - timedelta(seconds=2))
        await wait_for_gone(engine, second_placeholder)
        assert [r.message_id for r in await rows_of(engine, "9002")] == [m.message_id for m in second]
        assert (await rows_of(engine, "9002"))[0].rel_timestamp > 2  # shifted by -2 s: later, not earlier
    finally:
        stop.set()
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(service, working), timeout=30)
    async with engine.connect() as conn:
        left = (await conn.execute(select(vods.c.twitch_vod_id).where(vods.c.is_placeholder.is_(True)))).all()
    assert left == []


def chat_runtime_sessions(runtime) -> dict:
    auto = archive_services(runtime).chat.auto
    return auto.sessions if auto is not None else {}


async def reconcile_attempts(engine, placeholder: str) -> int:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(tasks.c.attempts, tasks.c.payload).where(tasks.c.kind == "chat.reconcile"))
        ).all()
    return sum(r.attempts for r in rows if r.payload["placeholder"] == placeholder)


async def wait_until(probe, expected: int, *, at_least: bool = False, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if value == expected or (at_least and value >= expected):
                return
            await asyncio.sleep(0.05)


async def wait_for_vod(engine, vod_id: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await vod_row(engine, vod_id) is None:
            await asyncio.sleep(0.05)


async def wait_for_gone(engine, vod_id: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while await vod_row(engine, vod_id) is not None:
            await asyncio.sleep(0.05)
