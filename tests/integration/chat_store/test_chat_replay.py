"""Replay over HTTP on a real uvicorn socket: the JSON window with keyset pagination, and the
SSE stream (paced by speed, not cut by any server timeout, resumable with Last-Event-ID,
heartbeats while idle, no database connection held between messages)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from reelhouse.app import create_app
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.models import vods
from reelhouse.archive.plugin import setup
from reelhouse.config import Settings
from reelhouse.core.runtime import build_runtime
from tests.integration.chat_store.conftest import make_vod, seed_chat

# Ten minutes of chat: 3000 messages, two per 0.4 s (equal rel_timestamps must keep their order).
SPAN_RELS = [(index // 2) * 0.4 for index in range(3000)]


@pytest.fixture
async def server(engine, tmp_path, monkeypatch):
    """The real app on a real socket, in the test's event loop."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    runtime = build_runtime(Settings(), engine=engine, load_domains=False)
    setup(runtime, chat_settings=ChatSettings(sse_heartbeat=timedelta(seconds=0.5)))
    app = create_app(runtime.settings, runtime=runtime, background=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
    )
    instance = uvicorn.Server(config)
    serving = asyncio.create_task(instance.serve())
    async with asyncio.timeout(10):
        while not instance.started:
            await asyncio.sleep(0.01)
    port = instance.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    instance.should_exit = True
    await serving


class SseReader:
    """Parses an SSE response into (id, data) events, comments and fields as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.events: list[tuple[str | None, str | None, dict]] = []  # (id, event, data)
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next_event(self):
        event_id = name = None
        data: list[str] = []
        async for line in self.lines:
            if line == "":
                if data or name:
                    parsed = (event_id, name, json.loads("\n".join(data)) if data else {})
                    self.events.append(parsed)
                    return parsed
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "id":
                event_id = value
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)
        return None


async def test_json_window_pages_through_a_range_with_the_cursor(engine, server):
    ids = await seed_chat(engine, "v1", SPAN_RELS)
    expected = [i for i, rel in zip(ids, SPAN_RELS, strict=True) if 100 <= rel <= 200]
    seen, url, pages = [], "/vods/v1/chat?from=100&to=200&limit=200", 0
    while url:
        response = await server.get(url)
        assert response.status_code == 200
        body = response.json()
        seen.extend(body)
        pages += 1
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
        if url:
            assert response.headers["x-next-cursor"] in url
    assert [m["message_id"] for m in seen] == expected and pages == math.ceil(len(expected) / 200)
    first = seen[0]
    assert set(first) >= {
        "abs_timestamp",
        "username",
        "message",
        "badges",
        "emotes",
        "color",
        "rel_timestamp",
        "message_id",
        "display_name",
    }
    assert first["abs_timestamp"].endswith("Z") and first["badges"] == "subscriber/6" and first["color"] == "#FF0000"
    assert first["rel_timestamp"] == pytest.approx(100.0)


async def test_json_window_keeps_vod_tenders_lenient_parameters(engine, server):
    await seed_chat(engine, "v1", [float(i) for i in range(1200)])
    assert len((await server.get("/vods/v1/chat?limit=0")).json()) == 1000  # out of range -> default
    assert len((await server.get("/vods/v1/chat?limit=99999")).json()) == 1000
    assert (await server.get("/vods/v1/chat?from=nan&limit=5")).json()[0]["rel_timestamp"] == 0.0
    assert len((await server.get("/vods/v1/chat?to=9")).json()) == 10
    unknown = await server.get("/vods/nope/chat")  # vod-tender's answer: no chat, not an error
    assert unknown.status_code == 200 and unknown.json() == []
    assert (await server.get("/vods/v1/chat?cursor=garbage!")).status_code == 400
    assert (await server.get("/vods/v1/chat?kind=clearchat")).json() == []
    assert (await server.get("/vods/v1/chat?kind=bogus")).status_code == 400


# On SQLite the minute-long test below streams the whole span at speed 10.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_sse_streams_ten_minutes_of_chat_without_being_cut(engine, server):
    """600 s of chat at speed 50: 12 s of wall time, past vod-tender's 10 s write timeout."""
    ids = await seed_chat(engine, "v1", SPAN_RELS)
    started = time.monotonic()
    async with server.stream("GET", "/vods/v1/chat/stream?speed=50") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        while (event := await reader.next_event()) is not None and event[1] != "end":
            pass
    elapsed = time.monotonic() - started
    messages = [data for _, name, data in reader.events if name is None]
    assert [m["message_id"] for m in messages] == ids
    assert reader.events[-1][1] == "end" and reader.retry == 3000
    assert elapsed >= 600 / 50 - 0.5  # paced, not dumped (how fast it went is bench material)
    event_ids = [event_id for event_id, name, _ in reader.events if name is None]
    assert len(set(event_ids)) == len(event_ids) == 3000


async def test_sse_at_speed_10_is_paced_and_resumes_after_last_event_id(engine, server):
    ids = await seed_chat(engine, "v1", SPAN_RELS)
    started = time.monotonic()
    async with server.stream("GET", "/vods/v1/chat/stream?speed=10&from=30") as response:
        reader = SseReader(response)
        while time.monotonic() - started < 3.0:
            await reader.next_event()
        elapsed = time.monotonic() - started
    got = reader.events
    last_rel = got[-1][2]["rel_timestamp"]
    # After ~3 s at 10x from 30 s in, the replay is near 60 s: neither behind nor dumped ahead.
    assert got[0][2]["rel_timestamp"] == pytest.approx(30.0)
    assert last_rel <= 30 + 10 * elapsed + 0.5  # never ahead of the pace
    # Reconnect as EventSource does: the stream continues right after the last event seen.
    async with server.stream(
        "GET", "/vods/v1/chat/stream?speed=10&from=30", headers={"Last-Event-ID": got[-1][0]}
    ) as response:
        resumed = SseReader(response)
        for _ in range(5):
            await resumed.next_event()
    position = ids.index(got[-1][2]["message_id"])
    assert [e[2]["message_id"] for e in resumed.events] == ids[position + 1 : position + 6]


# One backend: the minute of pacing is the HTTP layer's, and the queries behind it run on both
# backends in the tests above.
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sse_streams_the_whole_minute_at_speed_10_then_resumes(engine, server):
    """The acceptance as written: 10 minutes of chat at speed 10 is one minute of streaming on
    one connection, to the end event; then a reconnect with Last-Event-ID continues at the
    message after it."""
    ids = await seed_chat(engine, "v1", SPAN_RELS)
    started = time.monotonic()
    arrivals: list[float] = []
    async with server.stream("GET", "/vods/v1/chat/stream?speed=10") as response:
        reader = SseReader(response)
        while (event := await reader.next_event()) is not None and event[1] != "end":
            arrivals.append(time.monotonic() - started)
    elapsed = time.monotonic() - started
    messages = [data for _, name, data in reader.events if name is None]
    assert [m["message_id"] for m in messages] == ids and reader.events[-1][1] == "end"
    assert elapsed >= 59.0  # a minute of pacing, not dumped
    # Paced all the way: the message at rel r arrives near r / 10 s, none far ahead or behind.
    lateness = [arrived - m["rel_timestamp"] / 10 for arrived, m in zip(arrivals, messages, strict=False)]
    assert min(lateness) > -0.5  # none ahead of its time
    middle = reader.events[1500][0]
    async with server.stream("GET", "/vods/v1/chat/stream?speed=10", headers={"Last-Event-ID": middle}) as response:
        resumed = SseReader(response)
        for _ in range(5):
            await resumed.next_event()
    assert [e[2]["message_id"] for e in resumed.events] == ids[1501:1506]


async def test_sse_sends_heartbeats_and_holds_no_connection_while_waiting(engine, server):
    await seed_chat(engine, "v1", [0.0, 2.5])
    async with server.stream("GET", "/vods/v1/chat/stream?speed=1") as response:
        reader = SseReader(response)
        first = await reader.next_event()
        await asyncio.sleep(1.0)
        # Between two messages the stream waits without a pooled database connection.
        assert engine.pool.checkedout() == 0
        second = await reader.next_event()
        end = await reader.next_event()
    assert (first[2]["rel_timestamp"], second[2]["rel_timestamp"], end[1]) == (0.0, 2.5, "end")
    assert reader.comments.count("heartbeat") >= 3  # 2.5 s idle, heartbeat every 0.5 s


async def test_sse_for_an_unknown_vod_is_404(server):
    assert (await server.get("/vods/nope/chat/stream")).status_code == 404


async def test_sse_follows_a_live_placeholder_until_it_is_reconciled(engine, server):
    """A VOD still being recorded: the stream waits for new rows instead of ending."""
    await make_vod(engine, "live-1", placeholder=True)
    await seed_chat(engine, "live-1", [0.0], prefix="a")
    async with server.stream("GET", "/vods/live-1/chat/stream?speed=100") as response:
        reader = SseReader(response)
        first = await reader.next_event()
        await seed_chat(engine, "live-1", [0.5], prefix="b")  # recorded while someone watches
        second = await reader.next_event()
        async with engine.begin() as conn:
            await conn.execute(update(vods).where(vods.c.twitch_vod_id == "live-1").values(is_placeholder=False))
        end = await reader.next_event()
    assert (first[2]["message_id"], second[2]["message_id"], end[1]) == ("a-000000", "b-000000", "end")


async def test_status_reports_the_chat_recorder(server):
    body = (await server.get("/status")).json()
    assert body["chat"] == {"mode": "off", "running": False}
