"""Recent task history for the status page's charts: tasks finished per minute and how long
each kind took, bucketed in Python so one query serves SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states

# Enough rows for hours of a busy system; older rows beyond it are left out of the charts.
MAX_ROWS = 20_000


@dataclass
class History:
    hours: int
    minutes: list[int] = field(default_factory=list)  # bucket starts, unix seconds
    finished: dict[str, list[int]] = field(default_factory=dict)  # status -> count per minute
    durations: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # kind -> (finish, seconds)
    truncated: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "finished": self.finished,
            "durations": dict(sorted(self.durations.items())),
            "truncated": self.truncated,
        }


async def recent_history(engine: AsyncEngine, hours: int = 6) -> History:
    now = utcnow()
    since = now - timedelta(hours=hours)
    query = (
        select(tasks.c.kind, tasks.c.status, tasks.c.started_at, tasks.c.finished_at)
        .where(tasks.c.finished_at >= since)
        .order_by(tasks.c.finished_at.desc())
        .limit(MAX_ROWS)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    history = History(hours=hours, truncated=len(rows) == MAX_ROWS)
    first = int(since.timestamp()) // 60 * 60
    history.minutes = list(range(first, int(now.timestamp()) + 1, 60))
    index = {minute: i for i, minute in enumerate(history.minutes)}
    for status in (states.SUCCEEDED, states.FAILED, states.DEAD, states.CANCELLED):
        history.finished[status] = [0] * len(history.minutes)
    for row in rows:
        finished = int(row.finished_at.timestamp())
        bucket = index.get(finished // 60 * 60)
        if bucket is not None and row.status in history.finished:
            history.finished[row.status][bucket] += 1
        if row.status == states.SUCCEEDED and row.started_at is not None:
            seconds = (row.finished_at - row.started_at).total_seconds()
            history.durations.setdefault(row.kind, []).append((finished, round(seconds, 2)))
    for points in history.durations.values():
        points.reverse()
    return history
