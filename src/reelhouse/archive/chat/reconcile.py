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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from reelhouse.archive.kinds import ArchiveTask
from reelhouse.archive.live.settle import settle_recording
from reelhouse.archive.store.channels import ChannelStore
from reelhouse.archive.store.chat import ReconcileResult, move_chat, vod_state
from reelhouse.archive.twitch.helix import HelixClient, HelixVideo
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.chat.reconcile")

TASK_KIND = ArchiveTask.CHAT_RECONCILE


@dataclass(frozen=True)
class ReconcileRequest:
    placeholder: str
    channel: str
    started_at: datetime
    ended_at: datetime
    stream_id: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "placeholder": self.placeholder,
            "channel": self.channel,
            "stream_id": self.stream_id,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ReconcileRequest:
        try:
            return cls(
                placeholder=payload["placeholder"],
                channel=payload["channel"],
                started_at=datetime.fromisoformat(payload["started_at"]),
                ended_at=datetime.fromisoformat(payload["ended_at"]),
                stream_id=payload.get("stream_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"malformed chat.reconcile payload: {exc!r}") from None


def choose_vod(
    videos: Sequence[HelixVideo], started_at: datetime, stream_id: str | None, window: timedelta
) -> HelixVideo | None:
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


async def reconcile(
    channels: ChannelStore,
    helix: HelixClient,
    request: ReconcileRequest,
    *,
    match_window: timedelta,
    give_up_after: timedelta,
    now: datetime | None = None,
) -> ReconcileResult | None:
    """One attempt. TransientError while the VOD has not appeared yet (the engine retries),
    PermanentError once `give_up_after` has passed since the stream ended."""
    engine = channels.engine
    if not (await vod_state(engine, request.placeholder)).is_placeholder:
        return None
    user = await helix.get_user(request.channel)
    await channels.remember_user_id(request.channel, user.id)
    page = await helix.list_videos(user.id, type="archive", first=20)
    video = choose_vod(page.videos, request.started_at, request.stream_id, match_window)
    if video is None:
        waited = (now or utcnow()) - request.ended_at
        if waited > give_up_after:
            raise PermanentError(
                f"no archive VOD of #{request.channel} within {match_window} of {request.started_at.isoformat()} "
                f"after {waited}; placeholder {request.placeholder} keeps its chat "
                f"(reconcile by hand: reelhouse chat reconcile {request.placeholder} <vod id>)"
            )
        raise TransientError(f"archive VOD of #{request.channel} for {request.placeholder} not listed yet")
    result = await move_chat(engine, request.placeholder, video, request.started_at)
    if result is not None:
        log.info(
            "chat of %s moved to vod %s (%d messages, shifted %.3fs)",
            result.placeholder,
            result.vod_id,
            result.messages,
            result.shift_seconds,
            extra={"component": "chat", "channel": request.channel, "vod_id": result.vod_id},
        )
    return result


async def reconcile_task(services: ArchiveServices, ctx: TaskContext) -> dict[str, Any]:
    """The `chat.reconcile` task handler."""
    request = ReconcileRequest.from_payload(ctx.payload)
    if services.chat is not None and services.chat.is_recording(request.placeholder):
        # The stream came back under the same placeholder; reconcile after it ends again.
        raise TransientError(f"{request.placeholder} is being recorded again")
    if services.helix is None:
        raise PermanentError("TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET are not set; cannot look up VODs")
    chat = services.chat_settings
    result = await reconcile(
        services.channels,
        services.helix,
        request,
        match_window=chat.reconcile_match_window,
        give_up_after=chat.reconcile_window,
    )
    if result is None:
        return {"placeholder": request.placeholder, "status": "already reconciled"}
    # The stream's live recording (if any) belongs to the same VOD now.
    if await services.live.link_vod(result.placeholder, result.vod_id):
        await settle_recording(services, result.placeholder)
    return {
        "placeholder": result.placeholder,
        "vod_id": result.vod_id,
        "messages": result.messages,
        "shift_seconds": result.shift_seconds,
        "created_vod": result.created_vod,
    }
