"""Every statement on `live_recordings`, and the per-channel `channels.record_mode`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.archive.models import channels, live_recordings
from reelhouse.core.db.dialect import upsert_insert
from reelhouse.core.db.types import utcnow

RECORD_MODES = ("vod", "live", "both")
LIVE_MODES = ("live", "both")


class LiveState:
    RECORDING = "recording"
    ENDED = "ended"  # the stream ended; the segments are being joined
    FINISHED = "finished"  # the MP4 is written; not yet compared with / adopted as the VOD's file
    KEPT = "kept"  # the VOD's file is this recording
    DISCARDED = "discarded"  # "both": the downloaded VOD was the better copy
    FAILED = "failed"
    CANCELLED = "cancelled"


class LiveStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def record_mode(self, channel: str) -> str:
        async with self.engine.connect() as conn:
            mode = (await conn.execute(select(channels.c.record_mode).where(channels.c.name == channel))).scalar()
        return str(mode or "vod")

    async def live_channels(self, names: list[str]) -> list[str]:
        """Those of `names` whose record_mode records the live stream."""
        if not names:
            return []
        query = select(channels.c.name).where(channels.c.name.in_(names), channels.c.record_mode.in_(LIVE_MODES))
        async with self.engine.connect() as conn:
            found = set((await conn.execute(query)).scalars())
        return [name for name in names if name in found]

    async def set_record_mode(self, channel: str, mode: str) -> bool:
        if mode not in RECORD_MODES:
            raise ValueError(f"record mode must be one of {', '.join(RECORD_MODES)}")
        async with self.engine.begin() as conn:
            result = await conn.execute(update(channels).where(channels.c.name == channel).values(record_mode=mode))
        return bool(result.rowcount)

    async def open(
        self, *, channel: str, placeholder: str, started_at: datetime, stream_id: str | None, mode: str
    ) -> None:
        """The stream's row, unless it exists (a restart finds it again)."""
        row = {
            "channel": channel,
            "placeholder": placeholder,
            "started_at": started_at,
            "stream_id": stream_id,
            "mode": mode,
            "state": LiveState.RECORDING,
            "created_at": utcnow(),
        }
        async with self.engine.begin() as conn:
            await conn.execute(upsert_insert(conn, live_recordings).values(row).on_conflict_do_nothing())

    async def get(self, placeholder: str) -> Any:
        async with self.engine.connect() as conn:
            query = select(live_recordings).where(live_recordings.c.placeholder == placeholder)
            return (await conn.execute(query)).first()

    async def update(self, placeholder: str, *, conn: AsyncConnection | None = None, **values: Any) -> bool:
        statement = (
            update(live_recordings)
            .where(live_recordings.c.placeholder == placeholder)
            .values(updated_at=utcnow(), **values)
        )
        if conn is not None:
            return bool((await conn.execute(statement)).rowcount)
        async with self.engine.begin() as own:
            return bool((await own.execute(statement)).rowcount)

    async def link_vod(self, placeholder: str, vod_id: str) -> bool:
        """Reconciliation found the stream's VOD. False when the recording is linked already."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(live_recordings)
                .where(live_recordings.c.placeholder == placeholder, live_recordings.c.vod_id.is_(None))
                .values(vod_id=vod_id, updated_at=utcnow())
            )
        return bool(result.rowcount)

    async def for_vod(self, vod_id: str, channel: str, vod_date: datetime | None, window: timedelta) -> Any:
        """The recording of this VOD's stream: linked by reconciliation, or (not linked yet) the
        channel's recording whose stream started within `window` of the VOD's creation."""
        async with self.engine.connect() as conn:
            linked = (await conn.execute(select(live_recordings).where(live_recordings.c.vod_id == vod_id))).first()
            if linked is not None or vod_date is None:
                return linked
            rows = (
                await conn.execute(
                    select(live_recordings).where(
                        live_recordings.c.channel == channel,
                        live_recordings.c.vod_id.is_(None),
                        live_recordings.c.started_at >= vod_date - window,
                        live_recordings.c.started_at <= vod_date + window,
                    )
                )
            ).all()
        if not rows:
            return None
        return min(rows, key=lambda r: abs((r.started_at - vod_date).total_seconds()))

    async def list(self, *, channel: str | None = None, limit: int = 100) -> list[Any]:
        query = select(live_recordings).order_by(live_recordings.c.started_at.desc()).limit(limit)
        if channel is not None:
            query = query.where(live_recordings.c.channel == channel)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def count_by_state(self) -> dict[str, int]:
        from sqlalchemy import func

        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(live_recordings.c.state, func.count()).group_by(live_recordings.c.state))
            ).all()
        return {str(state): int(n) for state, n in rows}
