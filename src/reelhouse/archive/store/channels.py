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
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.archive.models import channels
from reelhouse.archive.settings import check_channel_name
from reelhouse.core.db.dialect import upsert_insert
from reelhouse.core.db.engine import write_transaction
from reelhouse.core.db.types import utcnow


@dataclass(frozen=True)
class Channel:
    name: str
    twitch_user_id: str | None
    enabled: bool
    source: str
    created_at: datetime
    paused: bool = False
    record_mode: str = "vod"  # vod | live | both


def _channel(row: Any) -> Channel:
    return Channel(
        row.name, row.twitch_user_id, bool(row.enabled), row.source, row.created_at, bool(row.paused), row.record_mode
    )


@asynccontextmanager
async def _writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that reads then writes: BEGIN IMMEDIATE on SQLite, which cannot upgrade a
    read lock while another connection writes."""
    async with write_transaction(engine) as conn:
        yield conn


class ChannelStore:
    """Every statement on the `channels` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def sync_env_channels(self, names: list[str]) -> None:
        """Make sure every configured channel has a row; existing rows (maybe disabled) are kept."""
        if not names:
            return
        now = utcnow()
        rows = [{"name": check_channel_name(n), "source": "env", "enabled": True, "created_at": now} for n in names]
        async with self.engine.begin() as conn:
            await conn.execute(upsert_insert(conn, channels).values(rows).on_conflict_do_nothing())

    async def list_channels(self, *, include_disabled: bool = False) -> list[Channel]:
        query = select(channels).order_by(channels.c.name)
        if not include_disabled:
            query = query.where(channels.c.enabled.is_(True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_channel(r) for r in rows]

    async def watched_channels(self, env_names: list[str]) -> list[str]:
        """Enabled, unpaused channel names (what discovery and chat act on) after syncing the
        environment's list into the table."""
        await self.sync_env_channels(env_names)
        return [c.name for c in await self.list_channels() if not c.paused]

    async def set_paused(self, name: str, paused: bool) -> Channel | None:
        """Pause or resume a watched channel; None when it is not watched."""
        login = check_channel_name(name)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(channels).where(channels.c.name == login, channels.c.enabled.is_(True)).values(paused=paused)
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(channels).where(channels.c.name == login))).one()
        return _channel(row)

    async def add_channel(self, name: str, *, source: str = "api") -> bool:
        """Watch `name`; returns False when it was already watched. A disabled row is re-enabled."""
        login = check_channel_name(name)
        async with _writing(self.engine) as conn:
            existing = (await conn.execute(select(channels.c.enabled).where(channels.c.name == login))).first()
            if existing is not None:
                if existing.enabled:
                    return False
                await conn.execute(update(channels).where(channels.c.name == login).values(enabled=True))
                return True
            await conn.execute(channels.insert().values(name=login, source=source, enabled=True, created_at=utcnow()))
            return True

    async def remove_channel(self, name: str) -> bool:
        """Stop watching `name` (its VODs, files and chat stay). False when it was not watched."""
        login = check_channel_name(name)
        async with _writing(self.engine) as conn:
            row = (
                await conn.execute(select(channels.c.source, channels.c.enabled).where(channels.c.name == login))
            ).first()
            if row is None or not row.enabled:
                return False
            if row.source == "env":
                await conn.execute(update(channels).where(channels.c.name == login).values(enabled=False))
            else:
                await conn.execute(delete(channels).where(channels.c.name == login))
            return True

    async def remember_user_id(self, name: str, user_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(channels)
                .where(channels.c.name == name, channels.c.twitch_user_id.is_distinct_from(user_id))
                .values(twitch_user_id=user_id)
            )
