"""Chat's reads and its multi-table moves: replay pages, the VOD rows chat is recorded under
(placeholders while a stream is live), and re-keying a placeholder's chat to the real VOD.

Functions take the engine, like the writer they sit beside; the bulk insert path itself is
`chat/writer.py` (see this package's docstring).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.models import chat_gaps, chat_messages, vods
from reelhouse.archive.store.vods import insert_new_statement, new_vod_row
from reelhouse.archive.twitch.helix import HelixVideo
from reelhouse.core.db.engine import is_sqlite, write_connection
from reelhouse.core.db.types import UtcDateTime

log = logging.getLogger("reelhouse.archive.chat")

PAGE_SIZE = 500


class CursorError(ValueError):
    """A chat cursor this store did not produce."""


@dataclass(frozen=True, slots=True, order=True)
class ChatCursor:
    """Position after a row: its rel_timestamp and id (ties on rel_timestamp are common)."""

    rel: float
    id: int

    def encode(self) -> str:
        # repr() of a float round-trips exactly, so no row is skipped or repeated on resume.
        return base64.urlsafe_b64encode(f"{self.rel!r}:{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ChatCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            rel_text, _, id_text = raw.partition(":")
            rel, row_id = float(rel_text), int(id_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise CursorError("invalid chat cursor") from None
        if not math.isfinite(rel):
            raise CursorError("invalid chat cursor")
        return cls(rel, row_id)


def cursor_of(row: Any) -> ChatCursor:
    return ChatCursor(row.rel_timestamp, row.id)


@dataclass(frozen=True)
class VodState:
    exists: bool
    is_placeholder: bool


@dataclass(frozen=True)
class ReconcileResult:
    placeholder: str
    vod_id: str
    shift_seconds: float
    messages: int
    created_vod: bool


_FIELDS = (
    chat_messages.c.id,
    chat_messages.c.kind,
    chat_messages.c.message_id,
    chat_messages.c.timestamp,
    chat_messages.c.rel_timestamp,
    chat_messages.c.user_id,
    chat_messages.c.username,
    chat_messages.c.display_name,
    chat_messages.c.message,
    chat_messages.c.badges,
    chat_messages.c.emotes,
    chat_messages.c.color,
    chat_messages.c.bits,
    chat_messages.c.reply_to_id,
    chat_messages.c.reply_to_username,
    chat_messages.c.reply_to_message,
    chat_messages.c.tags,
    chat_messages.c.channel,
)


async def vod_state(engine: AsyncEngine, vod_id: str) -> VodState:
    async with engine.connect() as conn:
        row = (await conn.execute(select(vods.c.is_placeholder).where(vods.c.twitch_vod_id == vod_id))).first()
    return VodState(row is not None, bool(row and row.is_placeholder))


async def fetch_page(
    engine: AsyncEngine,
    vod_id: str,
    *,
    from_rel: float = 0.0,
    to_rel: float | None = None,
    after: ChatCursor | None = None,
    limit: int = PAGE_SIZE,
    kinds: Sequence[str] | None = None,
) -> list[Any]:
    """Rows of `vod_id` with from_rel <= rel_timestamp (<= to_rel), after `after`, in order."""
    query = select(*_FIELDS).where(chat_messages.c.vod_id == vod_id, chat_messages.c.rel_timestamp >= from_rel)
    if to_rel is not None:
        query = query.where(chat_messages.c.rel_timestamp <= to_rel)
    if after is not None:
        query = query.where(tuple_(chat_messages.c.rel_timestamp, chat_messages.c.id) > tuple_(after.rel, after.id))
    if kinds:
        query = query.where(chat_messages.c.kind.in_(list(kinds)))
    query = query.order_by(chat_messages.c.rel_timestamp, chat_messages.c.id).limit(limit)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def iter_rows(
    engine: AsyncEngine,
    vod_id: str,
    *,
    from_rel: float = 0.0,
    to_rel: float | None = None,
    after: ChatCursor | None = None,
    page_size: int = PAGE_SIZE,
    kinds: Sequence[str] | None = None,
) -> AsyncIterator[Any]:
    """Every matching row in order, one page (one short-lived connection) at a time."""
    while True:
        page = await fetch_page(
            engine, vod_id, from_rel=from_rel, to_rel=to_rel, after=after, limit=page_size, kinds=kinds
        )
        for row in page:
            yield row
        if len(page) < page_size:
            return
        after = cursor_of(page[-1])


async def ensure_vod(
    engine: AsyncEngine,
    vod_id: str,
    *,
    channel: str,
    started_at: datetime,
    title: str | None = None,
    placeholder: bool = False,
) -> bool:
    """Create the vods row chat rows point at, unless it exists. True when it was created."""
    row_values = new_vod_row(
        vod_id,
        channel,
        title=title,
        date=started_at,
        duration_seconds=0 if placeholder else None,
        is_placeholder=placeholder,
    )
    async with engine.begin() as conn:
        created = bool((await conn.execute(insert_new_statement(conn, [row_values]))).first())
        if not created:
            row = (await conn.execute(select(vods.c.channel).where(vods.c.twitch_vod_id == vod_id))).first()
            if row is not None and row.channel not in ("", channel):
                log.warning(
                    "vod %s belongs to #%s, chat of #%s recorded under it",
                    vod_id,
                    row.channel,
                    channel,
                    extra={"component": "chat"},
                )
    return created


def placeholder_id(started_at: datetime) -> str:
    return f"live-{int(started_at.timestamp())}"


async def claim_placeholder(engine: AsyncEngine, channel: str, started_at: datetime, title: str) -> str:
    """Create (or find again, after a restart) the placeholder row of a stream. Two channels
    going live in the same second would share vod-tender's `live-<unix>`; the second one gets
    `live-<unix>-<channel>` instead of having its chat mixed into the first one's."""
    for vod_id in (placeholder_id(started_at), f"{placeholder_id(started_at)}-{channel}"):
        await ensure_vod(
            engine, vod_id, channel=channel, started_at=started_at, title=f"LIVE: {title}"[:500], placeholder=True
        )
        async with engine.connect() as conn:
            owner = (await conn.execute(select(vods.c.channel).where(vods.c.twitch_vod_id == vod_id))).scalar()
        if owner == channel:
            return vod_id
    raise RuntimeError(f"placeholder ids for #{channel} at {started_at.isoformat()} are taken")


async def placeholder_orphans(engine: AsyncEngine) -> list[Any]:
    """Every placeholder with the time its stream ended (its last chat line, else its
    creation): columns twitch_vod_id, channel, date, ended."""
    # Within one VOD rel_timestamp orders like timestamp, so idx_chat_vod_rel finds that line.
    last_line = (
        select(chat_messages.c.timestamp)
        .where(chat_messages.c.vod_id == vods.c.twitch_vod_id)
        .order_by(chat_messages.c.rel_timestamp.desc(), chat_messages.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    vods.c.twitch_vod_id,
                    vods.c.channel,
                    vods.c.date,
                    func.coalesce(last_line, vods.c.created_at, type_=UtcDateTime).label("ended"),
                ).where(vods.c.is_placeholder.is_(True))
            )
        ).all()
    return list(rows)


async def move_chat(
    engine: AsyncEngine, placeholder: str, video: HelixVideo, started_at: datetime
) -> ReconcileResult | None:
    """Re-key the placeholder's chat to `video` in one transaction; None if the placeholder is
    already gone (reconciled by an earlier attempt whose acknowledgement was lost)."""
    shift = (video.created_at - started_at).total_seconds()
    conn = await write_connection(engine)  # SQLite: take the write lock first, no upgrade deadlock
    try:
        async with conn.begin():
            lookup = select(vods.c.channel).where(vods.c.twitch_vod_id == placeholder, vods.c.is_placeholder.is_(True))
            row = (await conn.execute(lookup if is_sqlite(engine) else lookup.with_for_update())).first()
            if row is None:
                return None
            real_vod = new_vod_row(
                video.id, row.channel, title=video.title, date=video.created_at, duration_seconds=video.duration
            )
            created = bool((await conn.execute(insert_new_statement(conn, [real_vod]))).first())
            moved = (
                await conn.execute(
                    update(chat_messages)
                    .where(chat_messages.c.vod_id == placeholder)
                    .values(vod_id=video.id, rel_timestamp=chat_messages.c.rel_timestamp - shift)
                )
            ).rowcount
            await conn.execute(update(chat_gaps).where(chat_gaps.c.vod_id == placeholder).values(vod_id=video.id))
            await conn.execute(delete(vods).where(vods.c.twitch_vod_id == placeholder))
    finally:
        await conn.close()
    return ReconcileResult(placeholder, video.id, shift, moved, created)
