"""The archive's last-run times in `kv` (vod-tender's keys and format, which runbooks read)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import kv


async def latest_stamps(engine: AsyncEngine, keys: Sequence[str]) -> dict[str, str | None]:
    """The newest value of each key across channels (the format sorts like time)."""
    query = select(kv.c.key, func.max(kv.c.value)).where(kv.c.key.in_(list(keys))).group_by(kv.c.key)
    async with engine.connect() as conn:
        found = dict((await conn.execute(query)).all())
    return {key: found.get(key) for key in keys}
