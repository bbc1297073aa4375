"""The channels the archive watches: `TWITCH_CHANNELS`/`TWITCH_CHANNEL` plus the `channels` table.

Channels from the environment are written to the table (source `env`) on every discovery run,
so the table is the one list every node reads, and channels added through the API or CLI need
no restart (vod-tender read the env once at start). Removing an env channel disables it rather
than deleting the row; otherwise the next sync would bring it back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.archive.models import channels
from reelhouse.archive.settings import check_channel_name
from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.types import utcnow


@dataclass(frozen=True)
class Channel:
    name: str
    twitch_user_id: str | None
    enabled: bool
    source: str
    created_at: datetime


@asynccontextmanager
async def _writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that reads then writes: BEGIN IMMEDIATE on SQLite, which cannot upgrade a
    read lock while another connection writes."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            yield conn
    finally:
        await conn.close()


def _insert(engine: AsyncEngine):
    return pg_insert if engine.dialect.name == "postgresql" else sqlite_insert


async def sync_env_channels(engine: AsyncEngine, names: list[str]) -> None:
    """Make sure every configured channel has a row; existing rows (maybe disabled) are kept."""
    if not names:
        return
    now = utcnow()
    rows = [{"name": check_channel_name(n), "source": "env", "enabled": True, "created_at": now} for n in names]
    async with engine.begin() as conn:
        await conn.execute(_insert(engine)(channels).values(rows).on_conflict_do_nothing())


async def list_channels(engine: AsyncEngine, *, include_disabled: bool = False) -> list[Channel]:
    query = select(channels).order_by(channels.c.name)
    if not include_disabled:
        query = query.where(channels.c.enabled.is_(True))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Channel(r.name, r.twitch_user_id, bool(r.enabled), r.source, r.created_at) for r in rows]


async def watched_channels(engine: AsyncEngine, env_names: list[str]) -> list[str]:
    """Enabled channel names after syncing the environment's list into the table."""
    await sync_env_channels(engine, env_names)
    return [c.name for c in await list_channels(engine)]


async def add_channel(engine: AsyncEngine, name: str, *, source: str = "api") -> bool:
    """Watch `name`; returns False when it was already watched. A disabled row is re-enabled."""
    login = check_channel_name(name)
    async with _writing(engine) as conn:
        existing = (await conn.execute(select(channels.c.enabled).where(channels.c.name == login))).first()
        if existing is not None:
            if existing.enabled:
                return False
            await conn.execute(update(channels).where(channels.c.name == login).values(enabled=True))
            return True
        await conn.execute(channels.insert().values(name=login, source=source, enabled=True, created_at=utcnow()))
        return True


async def remove_channel(engine: AsyncEngine, name: str) -> bool:
    """Stop watching `name` (its VODs, files and chat stay). False when it was not watched."""
    login = check_channel_name(name)
    async with _writing(engine) as conn:
        row = (await conn.execute(select(channels.c.source, channels.c.enabled)
                                  .where(channels.c.name == login))).first()
        if row is None or not row.enabled:
            return False
        if row.source == "env":
            await conn.execute(update(channels).where(channels.c.name == login).values(enabled=False))
        else:
            await conn.execute(delete(channels).where(channels.c.name == login))
        return True


async def remember_user_id(engine: AsyncEngine, name: str, user_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(channels).where(channels.c.name == name,
                                                  channels.c.twitch_user_id.is_distinct_from(user_id))
                           .values(twitch_user_id=user_id))
