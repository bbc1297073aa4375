# Over 400 lines: the SQLite and PostgreSQL paths of one batcher share its queue and counts.
"""Batched chat storage: rows go into a bounded in-memory queue and one task writes them in
batches, so the IRC reader never waits for the database (vod-tender ran one INSERT per message
inside the IRC callback, reference §12.2).

A batch is written when it holds `batch_size` rows or `flush_interval` seconds after its first
row arrived, whichever comes first, so a crash loses at most that window. A batch takes every
row waiting, up to `max_batch_size` (10x batch_size by default): when chat comes in faster than
the database takes it, batches grow and the per-transaction costs (a commit's WAL flush, a
round trip) are paid less often, which is what lets the writer catch up; at ordinary rates
batches stay small and rows reach the table within `flush_interval`. `submit` never waits:
when the queue is full the row is dropped and counted (`chat_messages_dropped_total`), which is
the only honest choice when a database stays slower than chat for longer than the queue lasts.

PostgreSQL: COPY (binary, asyncpg) straight into chat_messages; a batch that holds an id already
stored fails as a whole on the unique index and is then COPYed into a per-connection temp table
and merged with `INSERT ... SELECT ... ON CONFLICT (message_id) DO NOTHING`, so duplicates
(a reconnect replay, a second recorder) are dropped without paying for the merge every time.
SQLite: one `INSERT ... ON CONFLICT DO NOTHING` executemany per batch in one write transaction.
Either way a batch is one transaction: all of it or none of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.archive.chat import metrics
from reelhouse.core.db.engine import is_sqlite, write_connection
from reelhouse.core.jobs.retry import backoff_delay

log = logging.getLogger("reelhouse.archive.chat.writer")

# Column order of a row tuple; `tags` is a JSON string or None.
COLUMNS = (
    "channel",
    "vod_id",
    "message_id",
    "kind",
    "timestamp",
    "rel_timestamp",
    "user_id",
    "username",
    "display_name",
    "message",
    "badges",
    "emotes",
    "color",
    "bits",
    "reply_to_id",
    "reply_to_username",
    "reply_to_message",
    "tags",
)
_TS = COLUMNS.index("timestamp")
_CHANNEL = COLUMNS.index("channel")
_QUOTED = ", ".join(f'"{c}"' for c in COLUMNS)

# ON CONFLICT (message_id), not OR IGNORE: OR IGNORE would also skip rows breaking NOT NULL,
# silently, where they must be isolated and counted as rejected.
_SQLITE_INSERT = (
    f"INSERT INTO chat_messages ({_QUOTED}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (message_id) DO NOTHING"
)
_SQLITE_GAP = "INSERT INTO chat_gaps (channel, vod_id, started_at, ended_at, reason) VALUES (?, ?, ?, ?, ?)"

_PG_STAGING = "chat_staging"
_PG_STAGING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGING} (
    ord integer, channel text, vod_id text, message_id text, kind text, "timestamp" timestamptz,
    rel_timestamp double precision, user_id text, username text, display_name text, message text,
    badges text, emotes text, color text, bits integer, reply_to_id text, reply_to_username text,
    reply_to_message text, tags text
) ON COMMIT DELETE ROWS"""
# ORDER BY ord keeps ids in arrival order: replay breaks rel_timestamp ties by id.
_PG_MERGE = f"""
WITH inserted AS (
    INSERT INTO chat_messages ({_QUOTED})
    SELECT {_QUOTED} FROM {_PG_STAGING} ORDER BY ord
    ON CONFLICT (message_id) DO NOTHING
    RETURNING channel
)
SELECT channel, count(*) FROM inserted GROUP BY channel"""
_PG_INSERT_ONE = f"""
INSERT INTO chat_messages ({_QUOTED}) VALUES ({", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))})
ON CONFLICT (message_id) DO NOTHING"""
_PG_GAP = "INSERT INTO chat_gaps (channel, vod_id, started_at, ended_at, reason) VALUES ($1, $2, $3, $4, $5)"

# Errors caused by the rows themselves: retrying the same batch can never succeed, so the batch
# is split and only the offending rows are given up.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.IntegrityError,
    sa_exc.DataError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


@dataclass(frozen=True, slots=True)
class GapRow:
    channel: str
    vod_id: str | None
    started_at: datetime
    ended_at: datetime
    reason: str


def tags_json(tags: dict[str, str]) -> str:
    return json.dumps(tags, ensure_ascii=False, separators=(",", ":"))


def sqlite_timestamp(value: datetime) -> str:
    """UtcDateTime's SQLite text form (naive UTC, fixed width), so raw inserts sort and read
    back exactly like rows written through SQLAlchemy."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class ChatWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = 1000,
        max_batch_size: int | None = None,
        flush_interval: float = 0.25,
        queue_size: int = 100_000,
        late_after: float = 5.0,
        retry_delay: float = 0.5,
        retry_delay_max: float = 10.0,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.max_batch_size = max(batch_size, max_batch_size or 10 * batch_size)
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.late_after = late_after
        self._retry_delay = (retry_delay, retry_delay_max)
        self._sqlite = is_sqlite(engine)
        self._rows: deque[tuple[float, tuple[Any, ...]]] = deque()
        self._gaps: list[GapRow] = []
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Condition()
        self._submitted = 0  # sequence number of the last accepted row or gap
        self._done = 0  # every item up to this number is written or given up
        self._flush_wanted = False
        self._merge_until = 0.0  # PostgreSQL: merge (not COPY directly) until this monotonic time
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        # Plain counters for tests and /status; the Prometheus metrics mirror them.
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.late = 0
        self.batches = 0

    # ---- producer side --------------------------------------------------------------------
    def submit(self, row: tuple[Any, ...], received: float | None = None) -> bool:
        """Queue one row (COLUMNS order); False (and counted) when the queue is full.
        `received`: time.monotonic() when the message was read, for the late metric."""
        if self._closed or len(self._rows) >= self.queue_size:
            self.dropped += 1
            metrics.MESSAGES_DROPPED.labels("writer_queue").inc()
            return False
        self._rows.append((time.monotonic() if received is None else received, row))
        self._submitted += 1
        if len(self._rows) == 1 or len(self._rows) >= self.batch_size:
            self._wakeup.set()  # the first row starts the flush timer; a full batch goes now
        return True

    def submit_gap(self, gap: GapRow) -> None:
        """Gaps are never dropped: they are the only record that chat is missing."""
        self._gaps.append(gap)
        self._submitted += 1
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._rows) + len(self._gaps)

    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything submitted before the call is written (or given up)."""
        target = self._submitted
        self._flush_wanted = True
        self._wakeup.set()
        async with asyncio.timeout(timeout):
            async with self._progress:
                await self._progress.wait_for(lambda: self._done >= target or self._task is None)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> ChatWriter:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chat-writer")
        return self

    async def stop(self) -> None:
        """Write what is queued, then end. New rows are refused from now on."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.shield(self._task)
            finally:
                self._task = None
                async with self._progress:
                    self._progress.notify_all()

    async def __aenter__(self) -> ChatWriter:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- consumer side --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch, gaps = await self._next_batch()
            if not batch and not gaps:
                return  # closed and drained
            await self._write_until_done(batch, gaps)
            async with self._progress:
                self._done += len(batch) + len(gaps)
                if self._done >= self._submitted:
                    self._flush_wanted = False
                self._progress.notify_all()

    async def _next_batch(self) -> tuple[list[tuple[float, tuple[Any, ...]]], list[GapRow]]:
        while not self._rows and not self._gaps:
            if self._closed:
                return [], []
            self._wakeup.clear()
            await self._wakeup.wait()
        # Wait for a full batch, but never longer than flush_interval after the oldest row.
        deadline = (self._rows[0][0] if self._rows else time.monotonic()) + self.flush_interval
        while len(self._rows) < self.batch_size and not (self._closed or self._flush_wanted or self._gaps):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        count = min(self.max_batch_size, len(self._rows))
        batch = [self._rows.popleft() for _ in range(count)]
        gaps, self._gaps = self._gaps, []
        return batch, gaps

    async def _write_until_done(self, batch: list[tuple[float, tuple[Any, ...]]], gaps: list[GapRow]) -> None:
        rows = [row for _, row in batch]
        attempt, isolate = 0, False
        while True:
            started = time.perf_counter()
            try:
                counts = await (self._write_one_by_one(rows, gaps) if isolate else self._write(rows, gaps))
            except _DATA_ERRORS as exc:
                log.warning(
                    "chat batch rejected (%s: %s); writing its rows one by one",
                    type(exc).__name__,
                    exc,
                    extra={"component": "chat"},
                )
                isolate = True
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away (restart, network, lock): keep the batch and try again;
                # meanwhile new rows wait in the bounded queue. After stop(), a few tries only.
                attempt += 1
                if self._closed and attempt > 3:
                    self._give_up(rows, gaps, exc)
                    return
                base, cap = self._retry_delay
                delay = backoff_delay(attempt, base=base, cap=cap).total_seconds()
                log.warning(
                    "chat batch of %d not written (%s: %s); retrying in %.1fs",
                    len(rows),
                    type(exc).__name__,
                    exc,
                    delay,
                    extra={"component": "chat"},
                )
                await asyncio.sleep(delay)
                continue
            metrics.BATCH_WRITE_SECONDS.observe(time.perf_counter() - started)
            self._account(batch, counts)
            return

    def _account(self, batch: list[tuple[float, tuple[Any, ...]]], counts: Counter[str]) -> None:
        self.batches += 1
        for channel, count in counts.items():
            self.written += count
            metrics.MESSAGES_RECORDED.labels(channel).inc(count)
        now = time.monotonic()
        if batch and now - batch[0][0] > self.late_after:  # rows are in arrival order
            late = sum(1 for received, _ in batch if now - received > self.late_after)
            self.late += late
            metrics.MESSAGES_LATE.inc(late)

    def _give_up(self, rows: Sequence[tuple[Any, ...]], gaps: Sequence[GapRow], exc: BaseException) -> None:
        self.dropped += len(rows)
        metrics.MESSAGES_DROPPED.labels("writer_queue").inc(len(rows))
        log.error(
            "chat writer stopping with the database unavailable: %d messages and %d gaps lost (%s)",
            len(rows),
            len(gaps),
            exc,
            extra={"component": "chat"},
        )

    # ---- backends ---------------------------------------------------------------------------
    async def _write(self, rows: Sequence[tuple[Any, ...]], gaps: Sequence[GapRow]) -> Counter[str]:
        if self._sqlite:
            return await self._write_sqlite(rows, gaps)
        return await self._write_postgres(rows, gaps)

    async def _write_sqlite(self, rows: Sequence[tuple[Any, ...]], gaps: Sequence[GapRow]) -> Counter[str]:
        by_channel: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            encoded = (*row[:_TS], sqlite_timestamp(row[_TS]), *row[_TS + 1 :])
            by_channel.setdefault(row[_CHANNEL], []).append(encoded)
        counts: Counter[str] = Counter()
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                # One executemany per channel: its rowcount says how many rows were new.
                for channel, channel_rows in by_channel.items():
                    result = await conn.exec_driver_sql(_SQLITE_INSERT, channel_rows)
                    counts[channel] += max(result.rowcount, 0)
                if gaps:
                    await conn.exec_driver_sql(
                        _SQLITE_GAP,
                        [
                            (
                                g.channel,
                                g.vod_id,
                                sqlite_timestamp(g.started_at),
                                sqlite_timestamp(g.ended_at),
                                g.reason,
                            )
                            for g in gaps
                        ],
                    )
        finally:
            await conn.close()
        return counts

    async def _write_postgres(self, rows: Sequence[tuple[Any, ...]], gaps: Sequence[GapRow]) -> Counter[str]:
        async with self.engine.connect() as conn:
            pg = await _asyncpg_connection(conn)
            if rows and not conn.info.get("chat_staging"):
                # Outside the batch transaction: a failed batch must not roll the table back.
                await pg.execute(_PG_STAGING_DDL)
                conn.info["chat_staging"] = True  # a temp table lives as long as its connection
            if rows and time.monotonic() >= self._merge_until:
                # Fast path: Twitch does not replay lines after a reconnect, so a batch almost
                # never holds a stored id and COPY straight into the table is safe. A unique
                # violation aborts it without a trace; the batch then goes through the merge,
                # and so do the batches of the next minute (e.g. two recorders on one chat).
                try:
                    async with pg.transaction():
                        await pg.copy_records_to_table("chat_messages", records=rows, columns=COLUMNS)
                        await self._insert_gaps_pg(pg, gaps)
                    return Counter(row[_CHANNEL] for row in rows)
                except asyncpg.UniqueViolationError:
                    self._merge_until = time.monotonic() + 60.0
            counts: Counter[str] = Counter()
            async with pg.transaction():
                if rows:
                    await pg.copy_records_to_table(
                        _PG_STAGING,
                        records=[(index, *row) for index, row in enumerate(rows)],
                        columns=("ord", *COLUMNS),
                    )
                    for channel, count in await pg.fetch(_PG_MERGE):
                        counts[channel] += count
                await self._insert_gaps_pg(pg, gaps)
        return counts

    @staticmethod
    async def _insert_gaps_pg(pg: asyncpg.Connection, gaps: Sequence[GapRow]) -> None:
        if gaps:
            await pg.executemany(_PG_GAP, [(g.channel, g.vod_id, g.started_at, g.ended_at, g.reason) for g in gaps])

    async def _write_one_by_one(self, rows: Sequence[tuple[Any, ...]], gaps: Sequence[GapRow]) -> Counter[str]:
        """Isolate bad rows (a vods row deleted under us, an odd value): each row in its own
        transaction, the ones the database refuses are logged and counted as rejected."""
        counts: Counter[str] = Counter()
        for row in rows:
            try:
                counts.update(await self._write([row], ()))
            except _DATA_ERRORS as exc:
                self.rejected += 1
                metrics.MESSAGES_DROPPED.labels("invalid").inc()
                log.warning(
                    "chat message %s for vod %s rejected by the database: %s",
                    row[2],
                    row[1],
                    exc,
                    extra={"component": "chat"},
                )
        for gap in gaps:
            try:
                await self._write((), [gap])
            except _DATA_ERRORS as exc:
                log.warning(
                    "chat gap for #%s rejected by the database: %s", gap.channel, exc, extra={"component": "chat"}
                )
        return counts


async def _asyncpg_connection(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    return raw.driver_connection
