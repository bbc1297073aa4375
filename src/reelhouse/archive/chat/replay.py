"""Reading chat back: keyset pages by (rel_timestamp, id), the JSON shape vod-tender's clients
parse, and the paced Server-Sent-Events replay.

Every read is a page fetched on a connection that goes back to the pool right away, so a
viewer watching a three-hour replay holds no database connection while it waits between
messages (vod-tender held one cursor per viewer for the whole replay, reference §12.16).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.store.chat import PAGE_SIZE, ChatCursor, cursor_of, fetch_page, vod_state

MAX_SPEED = 100.0


def rfc3339_ms(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def message_json(row: Any) -> dict[str, Any]:
    """vod-tender's fields (abs_timestamp, username, message, badges, emotes, color,
    rel_timestamp) plus what it never stored."""
    return {
        "abs_timestamp": rfc3339_ms(row.timestamp),
        "rel_timestamp": row.rel_timestamp,
        "username": row.username,
        "display_name": row.display_name,
        "message": row.message,
        "badges": row.badges or "",
        "emotes": row.emotes or "",
        "color": row.color or "",
        "message_id": row.message_id,
        "user_id": row.user_id,
        "kind": row.kind,
        "bits": row.bits or 0,
        "reply_to_id": row.reply_to_id,
        "reply_to_username": row.reply_to_username,
        "reply_to_message": row.reply_to_message,
        "tags": row.tags or {},
    }


def clamp_speed(speed: float | None) -> float:
    """vod-tender's rule: NaN, infinite, <= 0 or > 100 means 1."""
    if speed is None or not math.isfinite(speed) or speed <= 0 or speed > MAX_SPEED:
        return 1.0
    return speed


def clamp_from(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) and value >= 0 else 0.0


def _event(row: Any) -> str:
    data = json.dumps(message_json(row), ensure_ascii=False, separators=(",", ":"))
    return f"id: {cursor_of(row).encode()}\ndata: {data}\n\n"


async def sse_replay(
    engine: AsyncEngine,
    vod_id: str,
    *,
    from_rel: float = 0.0,
    speed: float = 1.0,
    resume_after: ChatCursor | None = None,
    heartbeat: float = 15.0,
    retry_ms: int = 3000,
    follow_live: bool = False,
    live_poll: float = 1.0,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[str]:
    """SSE chunks replaying `vod_id` from `from_rel` (or after `resume_after`) at `speed`.

    Pacing is against a fixed schedule (start + (rel - base)/speed), not sleep-after-send, so
    page fetches and slow writes never accumulate drift. Rows sharing a rel_timestamp go out in
    one chunk. `follow_live`: for a VOD still being recorded, wait for new rows instead of
    ending. A `: heartbeat` comment goes out whenever nothing was sent for `heartbeat` seconds,
    so proxies keep the connection; an `end` event tells EventSource clients not to reconnect.
    """
    yield f"retry: {retry_ms}\n\n"
    after = resume_after
    base = resume_after.rel if resume_after is not None else from_rel
    started = time.monotonic()
    last_sent = started

    async def wait_until(due: float) -> AsyncIterator[str]:
        nonlocal last_sent
        while (now := time.monotonic()) < due:
            if now - last_sent >= heartbeat:
                last_sent = now
                yield ": heartbeat\n\n"
                continue
            await asyncio.sleep(min(due, last_sent + heartbeat) - now)

    while True:
        page = await fetch_page(engine, vod_id, from_rel=from_rel, after=after, limit=page_size)
        if not page:
            if follow_live and (await vod_state(engine, vod_id)).is_placeholder:
                async for beat in wait_until(time.monotonic() + live_poll):
                    yield beat
                continue
            yield "event: end\ndata: {}\n\n"
            return
        index = 0
        while index < len(page):
            rel = page[index].rel_timestamp
            async for beat in wait_until(started + (rel - base) / speed):
                yield beat
            chunk = []
            while index < len(page) and page[index].rel_timestamp == rel:
                chunk.append(_event(page[index]))
                index += 1
            last_sent = time.monotonic()
            yield "".join(chunk)
        after = cursor_of(page[-1])
