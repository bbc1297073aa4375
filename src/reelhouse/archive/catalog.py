"""Finding a channel's VODs on Twitch: the newest archives, and a paced back-catalog walk.

Discovery lists the newest page of archives every processing interval. The catalog backfill
pages through the whole archive list, pausing between pages, and persists Helix's cursor in
kv `catalog_after` (per channel) after each page, so an interrupted walk continues where it
stopped. Unlike vod-tender, the cursor is removed when the walk reaches the end (or the age
limit), so the next backfill starts again from the newest VOD instead of re-reading a stale
tail, and a cursor Helix no longer accepts is dropped and the walk restarted once.
Rows are inserted with ON CONFLICT DO NOTHING; existing rows are never modified.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.channels import remember_user_id
from reelhouse.archive.models import vods
from reelhouse.archive.twitch.helix import HelixClient, HelixVideo
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.jobs.kv import KV

log = logging.getLogger("reelhouse.archive.catalog")

CURSOR_KEY = "catalog_after"


@dataclass
class BackfillResult:
    channel: str
    pages: int = 0
    seen: int = 0
    inserted: list[str] = field(default_factory=list)
    complete: bool = False  # reached the end (or the age limit); the cursor was reset


async def insert_videos(engine: AsyncEngine, channel: str, videos: list[HelixVideo]) -> list[str]:
    """Insert VODs not yet known; returns the ids that are new."""
    if not videos:
        return []
    now = utcnow()
    rows = [{"channel": channel, "twitch_vod_id": v.id, "title": v.title, "date": v.created_at,
             "duration_seconds": v.duration, "created_at": now, "updated_at": now} for v in videos]
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    stmt = (insert(vods).values(rows).on_conflict_do_nothing(index_elements=[vods.c.twitch_vod_id])
            .returning(vods.c.twitch_vod_id))
    async with engine.begin() as conn:
        return [row[0] for row in (await conn.execute(stmt)).all()]


async def channel_user_id(engine: AsyncEngine, helix: HelixClient, channel: str) -> str:
    user = await helix.get_user(channel)  # cached by the client for its lifetime
    await remember_user_id(engine, channel, user.id)
    return user.id


async def discover_latest(engine: AsyncEngine, helix: HelixClient, channel: str, *, limit: int = 20) -> list[str]:
    """The newest `limit` archives of `channel` into `vods`; returns the new ids."""
    user_id = await channel_user_id(engine, helix, channel)
    page = await helix.list_videos(user_id, type="archive", first=limit)
    inserted = await insert_videos(engine, channel, page.videos)
    if inserted:
        log.info("discovered %d new VODs", len(inserted), extra={"component": "vod_discovery", "channel": channel})
    return inserted


async def backfill_catalog(engine: AsyncEngine, helix: HelixClient, channel: str, *, max_count: int = 0,
                           max_age_days: int = 0, page_size: int = 100, page_delay: float = 1.2,
                           now: datetime | None = None) -> BackfillResult:
    """Walk the archive list from the saved cursor. `max_count` bounds one run (the cursor is
    kept, so the next run continues); `max_age_days` stops at the first older VOD."""
    store = KV(engine)
    result = BackfillResult(channel)
    cutoff = (now or utcnow()) - timedelta(days=max_age_days) if max_age_days > 0 else None
    user_id = await channel_user_id(engine, helix, channel)
    cursor = await store.get(CURSOR_KEY, channel)
    retried_stale_cursor = False
    while True:
        first = page_size if not max_count else min(page_size, max_count - result.seen)
        try:
            page = await helix.list_videos(user_id, type="archive", first=first, after=cursor)
        except PermanentError as exc:
            if cursor is None or retried_stale_cursor:
                raise
            # Helix cursors expire; the walk restarts from the newest VOD rather than failing forever.
            log.warning("catalog cursor rejected (%s); restarting the walk", exc.reason,
                        extra={"component": "vod_catalog", "channel": channel})
            retried_stale_cursor = True
            cursor = None
            await store.delete([CURSOR_KEY], channel)
            continue
        result.pages += 1
        videos = page.videos
        if cutoff is not None and any(v.created_at < cutoff for v in videos):
            videos = [v for v in videos if v.created_at >= cutoff]
            result.complete = True
        result.seen += len(videos)
        result.inserted += await insert_videos(engine, channel, videos)
        if result.complete or not page.videos or page.cursor is None:
            result.complete = True
            await store.delete([CURSOR_KEY], channel)
            break
        cursor = page.cursor
        await store.set(CURSOR_KEY, cursor, channel)
        if max_count and result.seen >= max_count:
            break
        await asyncio.sleep(page_delay)  # Helix allows 800 points/min per app; stay polite
    log.info("catalog backfill: %d pages, %d seen, %d new%s", result.pages, result.seen, len(result.inserted),
             " (walk complete)" if result.complete else "", extra={"component": "vod_catalog", "channel": channel})
    return result
