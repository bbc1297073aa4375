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

from reelhouse.archive.store import ChannelStore, VodStore, new_vod_row
from reelhouse.archive.twitch.helix import HelixClient, HelixVideo
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.kv import KV
from reelhouse.core.providers.errors import Rejected

log = logging.getLogger("reelhouse.archive.catalog")

CURSOR_KEY = "catalog_after"


@dataclass
class BackfillResult:
    channel: str
    pages: int = 0
    seen: int = 0
    inserted: list[str] = field(default_factory=list)
    complete: bool = False  # reached the end (or the age limit); the cursor was reset


class Catalog:
    """Discovery and backfill for one process: the Helix client and the stores they fill."""

    def __init__(self, vods: VodStore, channels: ChannelStore, kv: KV, helix: HelixClient) -> None:
        self.vods, self.channels, self.kv, self.helix = vods, channels, kv, helix

    async def insert_videos(self, channel: str, videos: list[HelixVideo]) -> list[str]:
        """Insert VODs not yet known; returns the ids that are new."""
        rows = [
            new_vod_row(v.id, channel, title=v.title, date=v.created_at, duration_seconds=v.duration) for v in videos
        ]
        return await self.vods.insert_new(rows)

    async def channel_user_id(self, channel: str) -> str:
        user = await self.helix.get_user(channel)  # cached by the client for its lifetime
        await self.channels.remember_user_id(channel, user.id)
        return user.id

    async def discover_latest(self, channel: str, *, limit: int = 20) -> list[str]:
        """The newest `limit` archives of `channel` into `vods`; returns the new ids."""
        user_id = await self.channel_user_id(channel)
        page = await self.helix.list_videos(user_id, type="archive", first=limit)
        inserted = await self.insert_videos(channel, page.videos)
        if inserted:
            log.info("discovered %d new VODs", len(inserted), extra={"component": "vod_discovery", "channel": channel})
        return inserted

    async def backfill(
        self,
        channel: str,
        *,
        max_count: int = 0,
        max_age_days: int = 0,
        page_size: int = 100,
        page_delay: float = 1.2,
        now: datetime | None = None,
    ) -> BackfillResult:
        """Walk the archive list from the saved cursor. `max_count` bounds one run (the cursor is
        kept, so the next run continues); `max_age_days` stops at the first older VOD."""
        store = self.kv
        result = BackfillResult(channel)
        cutoff = (now or utcnow()) - timedelta(days=max_age_days) if max_age_days > 0 else None
        user_id = await self.channel_user_id(channel)
        cursor = await store.get(CURSOR_KEY, channel)
        retried_stale_cursor = False
        while True:
            first = page_size if not max_count else min(page_size, max_count - result.seen)
            try:
                page = await self.helix.list_videos(user_id, type="archive", first=first, after=cursor)
            except Rejected as exc:
                if cursor is None or retried_stale_cursor:
                    raise
                # Helix cursors expire; the walk restarts from the newest VOD rather than failing forever.
                log.warning(
                    "catalog cursor rejected (%s); restarting the walk",
                    exc.reason,
                    extra={"component": "vod_catalog", "channel": channel},
                )
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
            result.inserted += await self.insert_videos(channel, videos)
            if result.complete or not page.videos or page.cursor is None:
                result.complete = True
                await store.delete([CURSOR_KEY], channel)
                break
            cursor = page.cursor
            await store.set(CURSOR_KEY, cursor, channel)
            if max_count and result.seen >= max_count:
                break
            await asyncio.sleep(page_delay)  # Helix allows 800 points/min per app; stay polite
        log.info(
            "catalog backfill: %d pages, %d seen, %d new%s",
            result.pages,
            result.seen,
            len(result.inserted),
            " (walk complete)" if result.complete else "",
            extra={"component": "vod_catalog", "channel": channel},
        )
        return result
