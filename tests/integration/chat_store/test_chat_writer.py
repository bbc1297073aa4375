"""The batched writer and the recorder on SQLite and PostgreSQL: batching by size and time,
reconnect duplicates dropped, events stored as events, bad rows isolated, a full queue drops
and counts, and a database that stalls never stalls the socket reader."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from reelhouse.archive.chat import metrics
from reelhouse.archive.chat.rows import build_row
from reelhouse.archive.chat.writer import ChatWriter, GapRow
from reelhouse.archive.models import chat_gaps, chat_messages
from reelhouse.archive.twitch.chat_events import parse_event
from reelhouse.core.db.engine import write_connection
from tests.fakes.twitch_irc import load_corpus
from tests.integration.chat_store.conftest import T0, count_gaps, count_messages, make_vod, start_recording, wait_for


def sample_row(vod_id: str, index: int, *, channel: str = "dallas", message_id: str | None = None):
    line = (
        f"@badges=subscriber/12;color=#1E90FF;display-name=Viewer{index};emotes=25:0-4;"
        f"id={message_id or uuid.uuid4()};tmi-sent-ts={int(T0.timestamp() * 1000) + index};user-id={index} "
        f":viewer{index}!viewer{index}@viewer{index}.tmi.twitch.tv PRIVMSG #{channel} :Kappa message {index}"
    )
    return build_row(parse_event(line), vod_id, T0.timestamp())


def sample_metric(counter) -> float:
    return counter._value.get()


async def test_batches_by_size_then_by_time(engine):
    await make_vod(engine, "v1")
    async with ChatWriter(engine, batch_size=100, max_batch_size=100, flush_interval=0.3) as writer:
        for index in range(250):
            writer.submit(sample_row("v1", index))
        await wait_for(lambda: writer.written >= 200, timeout=10)
        # Two full batches go at once; the last 50 wait for the flush interval.
        assert writer.batches == 2 and await count_messages(engine) == 200
        await wait_for(lambda: writer.written == 250, timeout=10)  # the interval flushes the rest
        assert writer.batches == 3
    rows = await count_messages(engine, vod_id="v1")
    assert rows == 250


async def test_a_backlog_is_written_in_larger_batches(engine):
    # Rows waiting beyond batch_size go in the same transaction, up to max_batch_size (10x by
    # default): 2,500 rows queued at once take 3 transactions, not 25.
    await make_vod(engine, "v1")
    async with ChatWriter(engine, batch_size=100, flush_interval=0.3) as writer:
        assert writer.max_batch_size == 1000
        for index in range(2500):
            writer.submit(sample_row("v1", index))
        await writer.flush(timeout=30)
    assert writer.written == 2500 and writer.batches == 3
    assert await count_messages(engine, vod_id="v1") == 2500


async def test_duplicates_are_stored_once_across_and_within_batches(engine):
    await make_vod(engine, "v1")
    ids = [str(uuid.uuid4()) for _ in range(30)]
    async with ChatWriter(engine, batch_size=20, flush_interval=0.05) as writer:
        for index, message_id in enumerate(ids):
            writer.submit(sample_row("v1", index, message_id=message_id))
        await writer.flush(timeout=10)
        # A reconnect replays lines already stored, and a batch can hold the same id twice.
        for index, message_id in enumerate(ids[:25] + ids[:5]):
            writer.submit(sample_row("v1", index, message_id=message_id))
        await writer.flush(timeout=10)
    assert await count_messages(engine) == 30
    assert writer.written == 30  # `written` counts rows actually inserted


async def test_events_are_stored_by_kind_and_nothing_is_erased(engine):
    await make_vod(engine, "v1", channel="dallas")
    await make_vod(engine, "v2", channel="bar")
    corpus = load_corpus()
    lines = [
        "privmsg-basic",
        "privmsg-reply",
        "privmsg-bits",
        "usernotice-sub",
        "usernotice-raid",
        "clearchat-timeout",
        "clearchat-ban",
        "clearchat-full",
        "clearmsg",
    ]
    async with ChatWriter(engine, batch_size=100, flush_interval=0.05) as writer:
        for name in lines + lines:  # read twice, as after a reconnect
            event = parse_event(corpus[name])
            writer.submit(build_row(event, "v2" if event.channel == "bar" else "v1", T0.timestamp()))
        await writer.flush(timeout=10)
    async with engine.connect() as conn:
        rows = {r.message_id: r for r in (await conn.execute(select(chat_messages))).all()}
    kinds = sorted(r.kind for r in rows.values())
    assert kinds == ["clearchat"] * 3 + ["clearmsg"] + ["message"] * 3 + ["notice"] * 2
    basic = rows["b34ccfc7-4977-403a-8a94-33c6bac34fb8"]
    assert (basic.username, basic.display_name, basic.badges, basic.emotes) == (
        "ronni",
        "ronni",
        "turbo/1",
        "25:0-4,12-16/1902:6-10",
    )
    assert basic.tags["user-type"] == "global_mod" and "id" not in basic.tags
    assert basic.timestamp.timestamp() == pytest.approx(1507246572.675)
    assert basic.rel_timestamp == pytest.approx(1507246572.675 - T0.timestamp())
    reply = rows["7e1d7a33-1c4f-4a8e-b0b2-5d0c6f9a2e11"]
    assert reply.reply_to_id == "b1f3a4c2-2222-4b33-8c44-0d55e66f7788"
    assert reply.reply_to_message == "did you see that; C:\\games\\clip?"
    timeout = next(r for r in rows.values() if r.kind == "clearchat" and r.tags.get("ban-duration"))
    assert (timeout.username, timeout.user_id, timeout.tags["ban-duration"]) == ("ronni", "87654321", "350")
    deleted = next(r for r in rows.values() if r.kind == "clearmsg")
    assert deleted.vod_id == "v2" and deleted.message == "what a great day"
    assert deleted.tags["target-msg-id"] == "94e6c7ff-bf98-4faa-af5d-7ad633a158a9"
    sub = next(r for r in rows.values() if r.kind == "notice" and r.tags["msg-id"] == "sub")
    assert sub.username == "newsub" and "system-msg" in sub.tags


async def test_rows_the_database_refuses_do_not_sink_their_batch(engine):
    await make_vod(engine, "v1")
    before = sample_metric(metrics.MESSAGES_DROPPED.labels("invalid"))
    async with ChatWriter(engine, batch_size=50, flush_interval=0.05) as writer:
        for index in range(40):
            row = sample_row("v1", index)
            # Every tenth row has no VOD (NOT NULL): a row no retry can make the database take.
            writer.submit(row if index % 10 else (row[0], None, *row[2:]))
        # PostgreSQL refuses NUL in text; chat text is user input, so the row builder strips it.
        writer.submit(
            build_row(
                parse_event("@id=nul-1;tmi-sent-ts=1714586400000 :x!x@x.tmi.twitch.tv PRIVMSG #dallas :nul\x00byte"),
                "v1",
                0.0,
            )
        )
        await writer.flush(timeout=20)
    assert await count_messages(engine) == 37
    assert writer.rejected == 4 and writer.written == 37
    assert sample_metric(metrics.MESSAGES_DROPPED.labels("invalid")) - before == 4
    assert await count_messages(engine, message_id="nul-1") == 1


async def test_a_full_queue_drops_and_counts_instead_of_waiting(engine):
    await make_vod(engine, "v1")
    writer = ChatWriter(engine, batch_size=10, queue_size=100)
    before = sample_metric(metrics.MESSAGES_DROPPED.labels("writer_queue"))
    accepted = [writer.submit(sample_row("v1", index)) for index in range(150)]
    assert accepted.count(True) == 100 and writer.dropped == 50
    assert sample_metric(metrics.MESSAGES_DROPPED.labels("writer_queue")) - before == 50
    async with writer:
        await writer.flush(timeout=10)
    assert await count_messages(engine) == 100


async def test_gaps_are_written_with_the_batch(engine):
    await make_vod(engine, "v1")
    async with ChatWriter(engine, batch_size=1000, flush_interval=5.0) as writer:
        writer.submit(sample_row("v1", 1))
        writer.submit_gap(GapRow("dallas", "v1", T0, T0 + timedelta(seconds=3), "connection reset"))
        # A gap does not wait for the flush interval: it is written at once, with the rows.
        await wait_for(lambda: writer.batches == 1, timeout=3)
    assert await count_gaps(engine, vod_id="v1") == 1 and await count_messages(engine) == 1
    async with engine.connect() as conn:
        gap = (await conn.execute(select(chat_gaps))).one()
    assert gap.ended_at - gap.started_at == timedelta(seconds=3) and gap.reason == "connection reset"


async def test_a_stalled_database_never_stalls_the_socket_reader(engine, irc_server, make_client):
    """While another transaction holds the table, the client keeps reading every line (none
    dropped, none late at the socket); the rows are written once the lock goes away."""
    await make_vod(engine, "v1")
    client = make_client(["dallas"], queue_size=5000)
    writer = ChatWriter(engine, batch_size=200, flush_interval=0.05, queue_size=50_000)
    recorder, run = await start_recording(client, writer, "dallas", "v1")
    blocker = await write_connection(engine)
    try:
        await blocker.begin()  # BEGIN IMMEDIATE on SQLite: holds the database's write lock
        if engine.dialect.name == "postgresql":
            await blocker.execute(text("LOCK TABLE chat_messages IN EXCLUSIVE MODE"))
        sent = await irc_server.broadcast_burst(3000, ["dallas"])
        await wait_for(lambda: recorder.events_seen >= 3000, timeout=20)
        assert writer.written == 0 and client.stats.dropped == 0 and writer.dropped == 0
    finally:
        await blocker.rollback()
        await blocker.close()
    await writer.flush(timeout=60)
    await client.stop()
    await run
    await writer.stop()
    assert await count_messages(engine, vod_id="v1") == len(sent) == 3000


async def test_a_batch_survives_a_database_outage(engine):
    """While the table is unreachable the batch is kept and retried; nothing is lost or doubled."""
    await make_vod(engine, "v1")
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE chat_messages RENAME TO chat_messages_away"))
    writer = ChatWriter(
        engine, batch_size=50, max_batch_size=50, flush_interval=0.05, retry_delay=0.1, retry_delay_max=0.2
    )
    async with writer:
        for index in range(120):
            writer.submit(sample_row("v1", index))
        await asyncio.sleep(1.0)  # several failed attempts
        assert writer.written == 0 and writer.pending > 0
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE chat_messages_away RENAME TO chat_messages"))
        await writer.flush(timeout=20)
    assert await count_messages(engine) == 120 and writer.written == 120 and writer.dropped == 0
