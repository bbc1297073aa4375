"""Chat ingest: reelhouse's batched writer vs one INSERT per message (vod-tender's way) vs a bare
COPY / executemany of the same rows (the database's limit), on PostgreSQL and SQLite, same run.

    .venv/bin/python bench/chat.py [--messages 100000] [--per-row 10000] [--stream-messages 300000]
                                   [--repeat 3] [--backend both]

Messages come from the wire-level fake Twitch IRC server (a child process; its lines are
rendered before the clock starts) and are parsed by the real client. Two measurements:
- storage path: the captured events -> row building -> storage, as fast as it can go. This is
  where the three ways differ only in how rows reach the database.
- socket to table: the fake server's burst -> client -> recorder -> writer -> table, for
  --stream-messages per round (long enough for a sustained rate, flush tail included). On a
  2-core machine the recorder shares the CPUs with PostgreSQL and the fake server.
Each storage round starts from an empty chat_messages table; rounds alternate between the ways
so load on the machine hits all of them; rates are medians over rounds, ratios are medians of
the ratios within a round. The process runs with the collector settings of `reelhouse serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* (the fakes) from the repo root

from reelhouse.archive.chat.recorder import ChatRecorder
from reelhouse.archive.chat.rows import build_row
from reelhouse.archive.chat.writer import (
    _PG_INSERT_ONE,
    _QUOTED,
    _SQLITE_INSERT,
    COLUMNS,
    ChatWriter,
    _asyncpg_connection,
    sqlite_timestamp,
)
from reelhouse.archive.store.chat import ensure_vod
from reelhouse.archive.twitch.chat_events import ChatMessage
from reelhouse.archive.twitch.irc_client import TwitchChatClient
from reelhouse.config import Settings
from reelhouse.core.db.engine import create_engine
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.memory import tune_garbage_collector
from tests.integration.chat_store.irc_process import IrcServerProcess

ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CHANNELS = ["alpha", "bravo", "charlie"]
START = datetime.now(UTC).replace(microsecond=0)
log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 - progress; the report is stdout


# ---- the three ways of storing ---------------------------------------------------------------
async def reelhouse_storage(engine, events: list[ChatMessage]) -> float:
    """What the recorder does per event (build the row, queue it) with the writer running."""
    started = time.perf_counter()
    async with ChatWriter(engine, batch_size=2000, queue_size=len(events) + 1) as writer:
        start = START.timestamp()
        for index, event in enumerate(events):
            writer.submit(build_row(event, f"vod-{event.channel}", start))
            if index % 500 == 499:
                await asyncio.sleep(0)  # the socket reader's turn, as in the live recorder
        await writer.flush()
    return time.perf_counter() - started


async def per_row_storage(engine, events: list[ChatMessage]) -> float:
    """vod-tender: one INSERT, one implicit transaction, per message, awaited before the next."""
    start = START.timestamp()
    started = time.perf_counter()
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            pg = await _asyncpg_connection(conn)
            for event in events:
                await pg.execute(_PG_INSERT_ONE, *build_row(event, f"vod-{event.channel}", start))
        else:
            for event in events:
                row = build_row(event, f"vod-{event.channel}", start)
                await conn.exec_driver_sql(_SQLITE_INSERT, (*row[:4], sqlite_timestamp(row[4]), *row[5:]))
                await conn.commit()
    return time.perf_counter() - started


async def bare_storage(engine, events: list[ChatMessage]) -> float:
    """The same rows, built beforehand (not timed), in one COPY / one executemany: the limit."""
    start = START.timestamp()
    rows = [build_row(event, f"vod-{event.channel}", start) for event in events]
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            pg = await _asyncpg_connection(conn)
            started = time.perf_counter()
            await pg.copy_records_to_table("chat_messages", records=rows, columns=COLUMNS)
        else:
            encoded = [(*row[:4], sqlite_timestamp(row[4]), *row[5:]) for row in rows]
            sql = f"INSERT INTO chat_messages ({_QUOTED}) VALUES ({', '.join('?' * len(COLUMNS))})"
            started = time.perf_counter()
            await conn.exec_driver_sql(sql, encoded)
            await conn.commit()
    return time.perf_counter() - started


# ---- socket to table ------------------------------------------------------------------------
async def socket_to_table(engine, irc: IrcServerProcess, count: int, per_row: bool) -> float:
    client = TwitchChatClient(CHANNELS, host=irc.host, port=irc.port, queue_size=count + 1000)
    stored = 0
    if per_row:

        async def consume() -> None:
            nonlocal stored
            start = START.timestamp()
            async with engine.connect() as conn:
                pg = await _asyncpg_connection(conn) if engine.dialect.name == "postgresql" else None
                async for event in client.events():
                    if not isinstance(event, ChatMessage):
                        continue
                    row = build_row(event, f"vod-{event.channel}", start)
                    if pg is not None:
                        await pg.execute(_PG_INSERT_ONE, *row)
                    else:
                        await conn.exec_driver_sql(_SQLITE_INSERT, (*row[:4], sqlite_timestamp(row[4]), *row[5:]))
                        await conn.commit()
                    stored += 1

        writer = None
    else:
        writer = ChatWriter(engine, batch_size=2000, queue_size=count + 1)
        recorder = ChatRecorder(client, writer)
        for channel in CHANNELS:
            recorder.bind(channel, f"vod-{channel}", START)
        await writer.start()
        consume = recorder.run
    await irc.prepare(count, CHANNELS)  # rendering the lines is the fake's work, not timed
    await client.start()
    await client.wait_until_joined(10)
    consuming = asyncio.create_task(consume())
    started = time.perf_counter()
    await irc.blast()
    while (writer.written if writer else stored) < count:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await client.stop()
    await consuming
    if writer is not None:
        await writer.stop()
    return elapsed


async def capture(irc: IrcServerProcess, count: int) -> list[ChatMessage]:
    """Events as the real client parses them from the fake server."""
    client = TwitchChatClient(CHANNELS, host=irc.host, port=irc.port, queue_size=count + 1000)
    await client.start()
    await client.wait_until_joined(10)
    events: list[ChatMessage] = []

    async def collect() -> None:
        async for event in client.events():
            if isinstance(event, ChatMessage):
                events.append(event)
                if len(events) == count:
                    return

    collecting = asyncio.create_task(collect())
    await irc.prepare(count, CHANNELS)
    await irc.blast()
    await collecting
    await client.stop()
    return events


# ---- driver ---------------------------------------------------------------------------------
async def empty_table(engine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "DELETE FROM chat_messages" if engine.dialect.name == "sqlite" else "TRUNCATE chat_messages"
        )


async def timed(engine, run: Callable[..., Awaitable[float]], *args) -> float:
    await empty_table(engine)
    return await run(engine, *args)


async def bench_backend(
    name: str, url: str, irc: IrcServerProcess, events: list[ChatMessage], args: argparse.Namespace
) -> list[str]:
    engine = create_engine(url)
    try:
        await run_migrations(engine)
        for channel in CHANNELS:
            await ensure_vod(engine, f"vod-{channel}", channel=channel, started_at=START)
        few = events[: args.per_row]
        results: dict[str, list[float]] = {"reelhouse": [], "per_row": [], "bare": []}
        for round_number in range(args.repeat):
            results["reelhouse"].append(len(events) / await timed(engine, reelhouse_storage, events))
            results["bare"].append(len(events) / await timed(engine, bare_storage, events))
            results["per_row"].append(len(few) / await timed(engine, per_row_storage, few))
            log(f"{name} round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()))
        rate = {key: statistics.median(values) for key, values in results.items()}
        # Ratios of rounds run back to back, then their median: load that changes between
        # rounds (this is a shared machine) cancels out better than in a ratio of medians.
        vs_per_row = statistics.median(r / p for r, p in zip(results["reelhouse"], results["per_row"], strict=True))
        vs_bare = statistics.median(r / b for r, b in zip(results["reelhouse"], results["bare"], strict=True))
        bare_vs_per_row = statistics.median(b / p for b, p in zip(results["bare"], results["per_row"], strict=True))
        streamed = []
        for round_number in range(args.repeat):
            await empty_table(engine)
            streamed.append(
                args.stream_messages / await socket_to_table(engine, irc, args.stream_messages, per_row=False)
            )
            log(f"{name} socket to table round {round_number + 1}: reelhouse {streamed[-1]:,.0f}/s")
        e2e = statistics.median(streamed)
        await empty_table(engine)
        e2e_per_row = args.per_row / await socket_to_table(engine, irc, args.per_row, per_row=True)
        log(f"{name} socket to table: per-row {e2e_per_row:,.0f}/s")
    finally:
        await engine.dispose()
    return [
        f"| {name} | storage: reelhouse batched | {len(events):,} | {rate['reelhouse']:,.0f} "
        f"| {vs_per_row:.1f}x | {100 * vs_bare:.0f} % |",
        f"| {name} | storage: one INSERT per message | {len(few):,} | {rate['per_row']:,.0f} | 1.0x "
        f"| {100 / bare_vs_per_row:.1f} % |",
        f"| {name} | storage: bare {'COPY' if name == 'PostgreSQL' else 'executemany'} (limit) | {len(events):,} "
        f"| {rate['bare']:,.0f} | {bare_vs_per_row:.1f}x | 100 % |",
        f"| {name} | socket to table: reelhouse | {args.stream_messages:,} | {e2e:,.0f} "
        f"(range {min(streamed):,.0f}-{max(streamed):,.0f}) | {e2e / e2e_per_row:.1f}x | |",
        f"| {name} | socket to table: one INSERT per message | {args.per_row:,} | {e2e_per_row:,.0f} | 1.0x | |",
    ]


def header(args: argparse.Namespace, server_version: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()
    rows = [
        ("Command", f"`{shlex.join(sys.orig_argv)}` at reelhouse commit {commit or 'unknown'}"),
        (
            "Python / PostgreSQL / SQLite",
            f"{platform.python_version()} / {server_version} / {__import__('sqlite3').sqlite_version}",
        ),
        ("asyncpg / aiosqlite / SQLAlchemy", " / ".join(version(p) for p in ("asyncpg", "aiosqlite", "sqlalchemy"))),
        ("GC", f"generation-0 threshold {__import__('gc').get_threshold()[0]} (GC_GEN0_THRESHOLD, as `serve`)"),
        ("Machine", f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f} at start"),
        (
            "Messages",
            f"storage: {args.messages:,} PRIVMSGs over {len(CHANNELS)} channels (per-row: first "
            f"{args.per_row:,}); socket to table: {args.stream_messages:,}; median of {args.repeat} rounds",
        ),
    ]
    return "\n".join(
        ["## Chat ingest: batched vs one INSERT per message vs bare COPY", "", "| | |", "|---|---|"]
        + [f"| {k} | {v} |" for k, v in rows]
    )


async def bench(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    database = f"rh_bench_chat_{secrets.token_hex(4)}"
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        pg_url = f"postgresql+asyncpg://{ADMIN_DSN.partition('://')[2].rpartition('/')[0]}/{database}"
        print(header(args, await admin.fetchval("SHOW server_version")) + "\n", flush=True)
        rows: list[str] = []
        async with IrcServerProcess() as irc:
            log(f"capturing {args.messages:,} messages from the fake server")
            events = await capture(irc, args.messages)
            with tempfile.TemporaryDirectory() as tmp:
                backends = {"PostgreSQL": pg_url, "SQLite": f"sqlite+aiosqlite:///{tmp}/bench.db"}
                for name, url in backends.items():
                    if args.backend in ("both", name.lower()):
                        rows += await bench_backend(name, url, irc, events, args)
        print(
            "| backend | path | messages | msgs/s | vs one INSERT per message | vs bare limit |\n"
            "|---|---|---:|---:|---:|---:|"
        )
        print("\n".join(rows))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-row", type=int, default=10_000, help="messages for the per-row way (it is slow)")
    parser.add_argument(
        "--stream-messages",
        type=int,
        default=300_000,
        help="messages per socket-to-table round (long enough to be a sustained rate)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["both", "postgresql", "sqlite"], default="both")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 messages, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.per_row, args.repeat, args.stream_messages = 20_000, 2_000, 1, 20_000
    # The collector settings `reelhouse serve` runs with (GC_GEN0_THRESHOLD, core/memory.py),
    # for every way measured here alike.
    tune_garbage_collector(Settings().server.gc_gen0_threshold)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
