"""`VodStore`: every statement on the `vods` table (vod-tender's names, so its runbook SQL works).

Tasks, routes, the CLI, discovery and the chat recorder all go through this class; nothing
else in the archive writes `vods`. Reads return SQLAlchemy rows (attribute access by column
name). A few statements also read the engine's `tasks`/`jobs` tables, read-only, where the
answer depends on both (which VODs have work in flight).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.archive.models import vods
from reelhouse.core.db.dialect import Bind, upsert_insert
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.db.types import UtcDateTime, utcnow
from reelhouse.core.jobs import states

# A `vods` row as SQLAlchemy returns it (attribute access by column name).
VodRow = Any
# Placeholder rows (live chat before the VOD exists) may lack a date; created_at stands in so
# every row has a sort key and the keyset comparison stays total.
SORT_DATE = func.coalesce(vods.c.date, vods.c.created_at, type_=UtcDateTime)
REAL = vods.c.is_placeholder.is_(False)
# An error (even on a row an operator marked processed, as the runbook's "permanently failed"
# does) counts as errored, not pending or processed.
ERRORED = REAL & vods.c.processing_error.is_not(None) & (vods.c.processing_error != "")
PENDING = REAL & vods.c.processed.is_(False) & ~ERRORED
PROCESSED = REAL & vods.c.processed.is_(True)
UNPROCESSED = REAL & vods.c.processed.is_(False)
STATE_FILTERS: dict[str, ColumnElement[bool]] = {"pending": PENDING, "errored": ERRORED, "processed": PROCESSED}


class VodNotFound(LookupError):
    def __init__(self, vod_id: str) -> None:
        super().__init__(f"vod {vod_id} not found")
        self.vod_id = vod_id


class CursorError(ValueError):
    """A keyset cursor this store did not produce."""


@dataclass(frozen=True)
class PageCursor:
    """Position after the last row of a `VodStore.page()`: newest-first by (sort date, id)."""

    sort_date: datetime
    row_id: int

    def encode(self) -> str:
        raw = json.dumps([self.sort_date.astimezone(UTC).isoformat(), self.row_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            when, row_id = json.loads(raw)
            parsed = datetime.fromisoformat(when)
            if parsed.tzinfo is None or not isinstance(row_id, int):
                raise ValueError
            return cls(parsed, row_id)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise CursorError("invalid cursor") from None


@dataclass(frozen=True)
class VodCounts:
    pending: int
    errored: int
    processed: int


def new_vod_row(vod_id: str, channel: str, **values: Any) -> dict[str, Any]:
    """The values of a new `vods` row; `values` may carry title, date, duration_seconds,
    priority, is_placeholder."""
    now = utcnow()
    return {"twitch_vod_id": vod_id, "channel": channel, "created_at": now, "updated_at": now, **values}


def insert_new_statement(bind: Bind, rows: Sequence[dict[str, Any]]) -> Any:
    """`INSERT ... ON CONFLICT (twitch_vod_id) DO NOTHING RETURNING twitch_vod_id`, for callers
    that insert inside a transaction of their own (chat reconciliation)."""
    return (
        upsert_insert(bind, vods)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=[vods.c.twitch_vod_id])
        .returning(vods.c.twitch_vod_id)
    )


class VodStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- one row ------------------------------------------------------------------------------

    async def get(self, vod_id: str) -> VodRow | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()

    async def require(self, vod_id: str) -> VodRow:
        row = await self.get(vod_id)
        if row is None:
            raise VodNotFound(vod_id)
        return row

    async def with_job(self, vod_id: str) -> VodRow | None:
        """The row plus its current job's idempotency key (`job_key`) and status (`job_status`)."""
        query = (
            select(vods, jobs.c.idempotency_key.label("job_key"), jobs.c.status.label("job_status"))
            .select_from(vods.outerjoin(jobs, jobs.c.id == vods.c.job_id))
            .where(vods.c.twitch_vod_id == vod_id)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def update(self, vod_id: str, *, conn: AsyncConnection | None = None, **values: Any) -> bool:
        """Set columns (and `updated_at`); False when no such VOD. With `conn` (a task run's
        fenced transaction, `ctx.fenced()`) the write commits only while the run holds its task."""
        statement = update(vods).where(vods.c.twitch_vod_id == vod_id).values(updated_at=utcnow(), **values)
        if conn is not None:
            return bool((await conn.execute(statement)).rowcount)
        async with self.engine.begin() as own:
            return bool((await own.execute(statement)).rowcount)

    async def insert_new(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Insert rows (`new_vod_row`) whose VOD is not known yet; returns the new ids. Existing
        rows are never modified."""
        if not rows:
            return []
        async with self.engine.begin() as conn:
            return [r[0] for r in (await conn.execute(insert_new_statement(conn, rows))).all()]

    async def point_at_job(self, vod_id: str, job_id: int, *, new_job: bool) -> None:
        """Store the VOD's current job. Compare-and-set: never back to an older job."""
        values: dict[str, Any] = {"job_id": job_id, "updated_at": utcnow()}
        if new_job:
            values["download_state"] = "pending"
        async with self.engine.begin() as conn:
            await conn.execute(
                update(vods)
                .where(vods.c.twitch_vod_id == vod_id, (vods.c.job_id.is_(None)) | (vods.c.job_id <= job_id))
                .values(**values)
            )

    async def reset_for_reprocess(self, vod_id: str) -> None:
        # Booleans are written as booleans: vod-tender's `processed=0` fails on PostgreSQL (§12.20).
        await self.update(
            vod_id,
            processed=False,
            processing_error=None,
            youtube_url=None,
            youtube_upload_uri=None,
            uploaded_at=None,
            downloaded_path=None,
            download_state=None,
            download_retries=0,
            download_bytes=0,
            download_total=0,
            download_speed=None,
            download_eta_seconds=None,
            progress_updated_at=None,
        )

    async def set_priority(self, vod_id: str, priority: int) -> bool:
        """The VOD's priority, and its queued work's (the claim orders by task priority)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(vods)
                    .where(vods.c.twitch_vod_id == vod_id)
                    .values(priority=priority, updated_at=utcnow())
                    .returning(vods.c.job_id)
                )
            ).first()
            if row is None:
                return False
            if row.job_id is not None:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.job_id == row.job_id, tasks.c.status == states.QUEUED)
                    .values(priority=priority)
                )
                await conn.execute(update(jobs).where(jobs.c.id == row.job_id).values(priority=priority))
        return True

    async def clear_path_if(self, vod_id: str, path: str) -> None:
        """Forget a deleted file, unless a reprocess has set a new path meanwhile."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(vods)
                .where(vods.c.twitch_vod_id == vod_id, vods.c.downloaded_path == path)
                .values(downloaded_path=None, updated_at=utcnow())
            )

    # -- listings -----------------------------------------------------------------------------

    async def page(
        self,
        *,
        limit: int,
        channel: str | None = None,
        state: str | None = None,
        after: PageCursor | None = None,
        offset: int = 0,
    ) -> tuple[list[VodRow], PageCursor | None]:
        """Newest first; the cursor of the next page, or None on the last page. `offset` is
        vod-tender's pagination, kept for old clients (ignored with a cursor)."""
        query = select(vods, SORT_DATE.label("sort_date")).order_by(SORT_DATE.desc(), vods.c.id.desc())
        if channel:
            query = query.where(vods.c.channel == channel)
        if state is not None:
            query = query.where(STATE_FILTERS[state])
        if after is not None:
            query = query.where(
                or_(SORT_DATE < after.sort_date, and_(SORT_DATE == after.sort_date, vods.c.id < after.row_id))
            )
        elif offset:
            query = query.offset(offset)
        async with self.engine.connect() as conn:
            rows = list((await conn.execute(query.limit(limit + 1))).all())
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], PageCursor(last.sort_date, last.id)

    async def browse(
        self,
        *,
        limit: int,
        channel: str | None = None,
        state: str | None = None,
        title: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: PageCursor | None = None,
    ) -> tuple[list[VodRow], PageCursor | None]:
        """The web VOD list: `page()`'s order and keyset, plus a title search (substring, any
        case) and a date range on the sort date; live-chat placeholders left out."""
        query = select(vods, SORT_DATE.label("sort_date")).where(REAL).order_by(SORT_DATE.desc(), vods.c.id.desc())
        if channel:
            query = query.where(vods.c.channel == channel)
        if state is not None:
            query = query.where(STATE_FILTERS[state])
        if title:
            literal = title.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(vods.c.title.ilike(f"%{literal}%", escape="\\"))
        if since is not None:
            query = query.where(SORT_DATE >= since)
        if until is not None:
            query = query.where(SORT_DATE < until)
        if after is not None:
            query = query.where(
                or_(SORT_DATE < after.sort_date, and_(SORT_DATE == after.sort_date, vods.c.id < after.row_id))
            )
        async with self.engine.connect() as conn:
            rows = list((await conn.execute(query.limit(limit + 1))).all())
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], PageCursor(last.sort_date, last.id)

    async def unprocessed_for_channel(self, channel: str, limit: int) -> list[VodRow]:
        """VODs of `channel` that need a job: not processed, no error, not a placeholder, and no
        live job (none, or the last one ended). Columns: twitch_vod_id, job_id, job_status."""
        query = (
            select(vods.c.twitch_vod_id, vods.c.job_id, jobs.c.status.label("job_status"))
            .select_from(vods.outerjoin(jobs, jobs.c.id == vods.c.job_id))
            .where(
                vods.c.channel == channel,
                vods.c.processed.is_(False),
                REAL,
                vods.c.processing_error.is_(None),
                (vods.c.job_id.is_(None)) | (jobs.c.id.is_(None)) | jobs.c.status.in_(states.JOB_FINAL),
            )
            .order_by(vods.c.priority.desc(), vods.c.date.asc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def uploads_since(self, channel: str, since: datetime) -> list[VodRow]:
        """(uploaded_at, date) of the channel's uploads after `since`, oldest first."""
        query = (
            select(vods.c.uploaded_at, vods.c.date)
            .where(vods.c.channel == channel, vods.c.uploaded_at >= since)
            .order_by(vods.c.uploaded_at)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def with_files(self) -> list[VodRow]:
        """Rows that have a downloaded file (retention decides which to keep)."""
        query = select(
            vods.c.twitch_vod_id,
            vods.c.channel,
            vods.c.date,
            vods.c.created_at,
            vods.c.processed,
            vods.c.downloaded_path,
        ).where(vods.c.downloaded_path.is_not(None))
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def ids_with_open_work(self, kinds: Sequence[str]) -> set[str]:
        """VODs with a queued or running task of these kinds: their files are in use."""
        query = select(tasks.c.payload).where(
            tasks.c.kind.in_(list(kinds)), tasks.c.status.in_((states.QUEUED, states.RUNNING))
        )
        async with self.engine.connect() as conn:
            return {str(payload.get("vod_id")) for (payload,) in (await conn.execute(query)).all()}

    # -- counts for /status, /admin/monitor and /metrics ----------------------------------------

    async def counts(self) -> VodCounts:
        query = select(
            func.count().filter(PENDING), func.count().filter(ERRORED), func.count().filter(PROCESSED)
        ).select_from(vods)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return VodCounts(int(row[0]), int(row[1]), int(row[2]))

    async def unprocessed_by_priority(self) -> list[tuple[int, int]]:
        query = (
            select(vods.c.priority, func.count())
            .where(UNPROCESSED)
            .group_by(vods.c.priority)
            .order_by(vods.c.priority.desc())
        )
        async with self.engine.connect() as conn:
            return [(int(p), int(c)) for p, c in (await conn.execute(query)).all()]

    async def unprocessed_by_channel(self) -> dict[str, int]:
        query = select(vods.c.channel, func.count()).where(UNPROCESSED).group_by(vods.c.channel)
        async with self.engine.connect() as conn:
            return {str(ch): int(c) for ch, c in (await conn.execute(query)).all()}

    async def oldest_pending(self) -> VodRow | None:
        query = (
            select(vods.c.twitch_vod_id, vods.c.date)
            .where(PENDING)
            .order_by(vods.c.date.asc().nulls_last(), vods.c.id)
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def running_tasks(self, kind: str) -> int:
        query = select(func.count()).select_from(tasks).where(tasks.c.kind == kind, tasks.c.status == states.RUNNING)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def cancel_requested(self, task_id: int) -> bool:
        """Tells an operator's cancel apart from a shutdown or a lost lease (both also cancel a
        handler, but the task is then resumed elsewhere, not ended)."""
        query = select(tasks.c.cancel_requested).where(tasks.c.id == task_id)
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar())
