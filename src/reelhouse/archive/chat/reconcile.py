"""Reconciliation: move a live stream's chat from its placeholder VOD to the real archive VOD.

Runs as a job-engine task (`chat.reconcile`), so a failure is retried with backoff by whichever
worker is up, survives restarts, and never blocks recording of the next stream (vod-tender's
goroutine gave up after a hard-coded 15 minutes and its `running` flag then kept the next
stream from being recorded, reference §12.14). The task keeps trying for CHAT_RECONCILE_WINDOW
after the stream ended; after that the placeholder and its chat stay (never downloaded, since
placeholders are not queued) and can be reconciled by hand with `reelhouse chat reconcile`.

Matching: Helix's `stream_id` on the archive is exact; without it (restart, old placeholder)
the archive whose created_at is closest to the stream's started_at within
CHAT_RECONCILE_MATCH_WINDOW is taken. The move is ONE transaction: insert the real vods row if
discovery has not yet, shift rel_timestamp by (vod created_at - stream started_at), re-key the
chat and gap rows, delete the placeholder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.channels import remember_user_id
from reelhouse.archive.models import chat_gaps, chat_messages, vods
from reelhouse.archive.twitch.helix import HelixClient, HelixVideo
from reelhouse.core.db.engine import is_sqlite, write_connection
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError

log = logging.getLogger("reelhouse.archive.chat.reconcile")

TASK_KIND = "chat.reconcile"


@dataclass(frozen=True)
class ReconcileRequest:
    placeholder: str
    channel: str
    started_at: datetime
    ended_at: datetime
    stream_id: str | None = None

    def payload(self) -> dict[str, Any]:
        return {"placeholder": self.placeholder, "channel": self.channel, "stream_id": self.stream_id,
                "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ReconcileRequest:
        try:
            return cls(placeholder=payload["placeholder"], channel=payload["channel"],
                       started_at=datetime.fromisoformat(payload["started_at"]),
                       ended_at=datetime.fromisoformat(payload["ended_at"]),
                       stream_id=payload.get("stream_id"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"malformed chat.reconcile payload: {exc!r}") from None


@dataclass(frozen=True)
class ReconcileResult:
    placeholder: str
    vod_id: str
    shift_seconds: float
    messages: int
    created_vod: bool


def choose_vod(videos: Sequence[HelixVideo], started_at: datetime, stream_id: str | None,
               window: timedelta) -> HelixVideo | None:
    """The archive of the stream: same stream id if Helix says so, else the closest created_at
    within `window` (on a tie, one not before the stream start)."""
    if stream_id:
        for video in videos:
            if video.stream_id == stream_id:
                return video
    candidates = [v for v in videos if abs(v.created_at - started_at) <= window]
    if not candidates:
        return None
    return min(candidates, key=lambda v: (abs(v.created_at - started_at), v.created_at < started_at))


async def move_chat(engine: AsyncEngine, placeholder: str, video: HelixVideo, started_at: datetime) -> ReconcileResult | None:
    """Re-key the placeholder's chat to `video` in one transaction; None if the placeholder is
    already gone (reconciled by an earlier attempt whose acknowledgement was lost)."""
    shift = (video.created_at - started_at).total_seconds()
    insert = (sqlite if is_sqlite(engine) else postgresql).insert
    now = utcnow()
    conn = await write_connection(engine)  # SQLite: take the write lock first, no upgrade deadlock
    try:
        async with conn.begin():
            lookup = select(vods.c.channel).where(vods.c.twitch_vod_id == placeholder, vods.c.is_placeholder.is_(True))
            row = (await conn.execute(lookup if is_sqlite(engine) else lookup.with_for_update())).first()
            if row is None:
                return None
            created = (await conn.execute(insert(vods).values(
                channel=row.channel, twitch_vod_id=video.id, title=video.title, date=video.created_at,
                duration_seconds=video.duration, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["twitch_vod_id"]))).rowcount == 1
            moved = (await conn.execute(update(chat_messages).where(chat_messages.c.vod_id == placeholder).values(
                vod_id=video.id, rel_timestamp=chat_messages.c.rel_timestamp - shift))).rowcount
            await conn.execute(update(chat_gaps).where(chat_gaps.c.vod_id == placeholder).values(vod_id=video.id))
            await conn.execute(delete(vods).where(vods.c.twitch_vod_id == placeholder))
    finally:
        await conn.close()
    return ReconcileResult(placeholder, video.id, shift, moved, created)


async def reconcile(
    engine: AsyncEngine,
    helix: HelixClient,
    request: ReconcileRequest,
    *,
    match_window: timedelta,
    give_up_after: timedelta,
    now: datetime | None = None,
) -> ReconcileResult | None:
    """One attempt. TransientError while the VOD has not appeared yet (the engine retries),
    PermanentError once `give_up_after` has passed since the stream ended."""
    async with engine.connect() as conn:
        exists = (await conn.execute(select(vods.c.id).where(
            vods.c.twitch_vod_id == request.placeholder, vods.c.is_placeholder.is_(True)))).first()
    if exists is None:
        return None
    user = await helix.get_user(request.channel)
    await remember_user_id(engine, request.channel, user.id)
    page = await helix.list_videos(user.id, type="archive", first=20)
    video = choose_vod(page.videos, request.started_at, request.stream_id, match_window)
    if video is None:
        waited = (now or utcnow()) - request.ended_at
        if waited > give_up_after:
            raise PermanentError(
                f"no archive VOD of #{request.channel} within {match_window} of {request.started_at.isoformat()} "
                f"after {waited}; placeholder {request.placeholder} keeps its chat "
                f"(reconcile by hand: reelhouse chat reconcile {request.placeholder} <vod id>)")
        raise TransientError(f"archive VOD of #{request.channel} for {request.placeholder} not listed yet")
    result = await move_chat(engine, request.placeholder, video, request.started_at)
    if result is not None:
        log.info("chat of %s moved to vod %s (%d messages, shifted %.3fs)", result.placeholder, result.vod_id,
                 result.messages, result.shift_seconds,
                 extra={"component": "chat", "channel": request.channel, "vod_id": result.vod_id})
    return result


def reconcile_handler(
    engine: AsyncEngine,
    helix: Callable[[], HelixClient | None],
    *,
    match_window: timedelta,
    give_up_after: timedelta,
    still_recording: Callable[[str], bool],
) -> Callable[[TaskContext], Any]:
    """The `chat.reconcile` task handler bound to this process's clients."""

    async def run(ctx: TaskContext) -> dict[str, Any]:
        request = ReconcileRequest.from_payload(ctx.payload)
        if still_recording(request.placeholder):
            # The stream came back under the same placeholder; reconcile after it ends again.
            raise TransientError(f"{request.placeholder} is being recorded again")
        client = helix()
        if client is None:
            raise PermanentError("TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET are not set; cannot look up VODs")
        result = await reconcile(engine, client, request, match_window=match_window, give_up_after=give_up_after)
        if result is None:
            return {"placeholder": request.placeholder, "status": "already reconciled"}
        return {"placeholder": result.placeholder, "vod_id": result.vod_id, "messages": result.messages,
                "shift_seconds": result.shift_seconds, "created_vod": result.created_vod}

    return run
