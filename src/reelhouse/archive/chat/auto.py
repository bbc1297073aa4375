"""Auto mode (CHAT_AUTO_START=1): poll Helix for live streams and record each one under a
placeholder VOD until the real archive VOD exists.

Per channel the state is just "which stream is being recorded" (its started_at); each poll
compares that with Helix's answer:
- live, nothing recorded          -> placeholder `live-<unix started_at>` (is_placeholder=true,
                                     so it never enters the download queue), bind the channel;
- live with another started_at    -> the old stream ended between two polls: close it, start anew;
- offline (absent from /streams)  -> unbind, flush its chat, enqueue `chat.reconcile`.
Closing a stream never waits for its reconciliation: the task runs in the job engine, so the
next stream of the channel is recorded at once (vod-tender's shared `running` flag stayed set
while reconciling, and forever when reconciliation failed, reference §12.14). A failed Helix
poll changes nothing: a stream is only closed when Helix answers and the stream is absent.

Without a recorder (chat off) the same poller drives only the live recording (`on_live`) and
the reconciliation of its placeholders: archive/live/watch.py runs it so for the channels whose
`record_mode` is `live` or `both`.

State lives in this object only; after a restart, a channel that is still live finds its
placeholder again (same started_at, same id) and recording continues into it, and placeholders
left by streams that ended while the process was down get their reconcile task at the first
successful poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.chat.reconcile import TASK_KIND, ReconcileRequest
from reelhouse.archive.chat.recorder import ChatRecorder
from reelhouse.archive.store.chat import claim_placeholder, placeholder_orphans
from reelhouse.archive.twitch.helix import HelixClient, HelixStream
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.queue import TaskQueue

log = logging.getLogger("reelhouse.archive.chat.auto")


@dataclass(frozen=True)
class LiveStart:
    """What the live recording is told when a channel goes live."""

    channel: str
    placeholder: str
    started_at: datetime
    stream_id: str | None


@dataclass(frozen=True)
class LiveSession:
    channel: str
    vod_id: str
    started_at: datetime
    stream_id: str | None


class AutoChat:
    def __init__(
        self,
        engine: AsyncEngine,
        helix: HelixClient,
        recorder: ChatRecorder | None,
        channels: Callable[[], Awaitable[list[str]]],
        *,
        poll_interval: timedelta = timedelta(seconds=30),
        reconcile_delay: timedelta = timedelta(minutes=1),
        reconcile_max_attempts: int = 10_000,
        on_live: Callable[[LiveStart], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.helix = helix
        self.recorder = recorder
        self._channels = channels
        self.poll_interval = poll_interval.total_seconds()
        self.reconcile_delay = reconcile_delay
        self.reconcile_max_attempts = reconcile_max_attempts
        self.on_live = on_live
        self.sessions: dict[str, LiveSession] = {}
        self._pending: list[ReconcileRequest] = []
        self.polls = 0
        self.poll_errors = 0
        self._orphans_checked = False

    def is_recording(self, vod_id: str) -> bool:
        return any(session.vod_id == vod_id for session in self.sessions.values())

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except Exception:  # a bug here must not end recording of every channel
                    log.exception("chat live check failed", extra={"component": "chat"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        finally:
            # Shutting down is not the stream ending: placeholders stay open, and the next start
            # either continues them (still live) or reconciles them (ended meanwhile).
            if self.recorder is not None:
                for channel in list(self.sessions):
                    self.recorder.unbind(channel)

    async def poll_once(self) -> None:
        self.polls += 1
        try:
            channels = await self._channels()
            await self._follow_channel_list(channels)
            streams = await self.helix.get_streams(channels) if channels else []
        except Exception as exc:  # Helix or the database is away: keep recording what we record
            self.poll_errors += 1
            log.warning(
                "live check failed (%s: %s); keeping the current state",
                type(exc).__name__,
                exc,
                extra={"component": "chat"},
            )
            return
        live = {stream.user_login.lower(): stream for stream in streams if stream.type == "live"}
        for channel, session in list(self.sessions.items()):
            stream = live.get(channel)
            if stream is None or stream.started_at != session.started_at:
                await self._close(session)
        for channel, stream in live.items():
            if channel not in self.sessions and channel in channels:
                try:
                    await self._open(stream)
                except Exception as exc:  # database away: the next poll tries again
                    log.warning(
                        "could not start recording #%s (%s: %s)",
                        channel,
                        type(exc).__name__,
                        exc,
                        extra={"component": "chat", "channel": channel},
                    )
        await self._enqueue_pending()
        if not self._orphans_checked:
            await self._reconcile_orphans()
            self._orphans_checked = True

    async def _follow_channel_list(self, channels: list[str]) -> None:
        """Channels added or removed through the API are joined/parted without a restart."""
        if self.recorder is None:
            return  # no chat: a channel left out of the list is closed by the live check
        wanted, joined = set(channels), set(self.recorder.client.channels)
        for channel in sorted(wanted - joined):
            await self.recorder.client.join(channel)
        for channel in sorted(joined - wanted):
            session = self.sessions.get(channel)
            if session is not None:
                await self._close(session)
            await self.recorder.client.part(channel)

    async def _open(self, stream: HelixStream) -> None:
        channel = stream.user_login.lower()
        vod_id = await claim_placeholder(self.engine, channel, stream.started_at, stream.title)
        self.sessions[channel] = LiveSession(channel, vod_id, stream.started_at, stream.id)
        if self.recorder is not None:
            self.recorder.bind(channel, vod_id, stream.started_at)
        if self.on_live is not None:
            try:
                await self.on_live(LiveStart(channel, vod_id, stream.started_at, stream.id))
            except Exception:  # chat goes on; the next start (restart) tries the recording again
                log.exception(
                    "could not start the live recording of #%s",
                    channel,
                    extra={"component": "chat", "channel": channel},
                )
        log.info(
            "#%s is live since %s; %s under %s",
            channel,
            stream.started_at.isoformat(),
            "recording chat" if self.recorder is not None else "(no chat) placeholder",
            vod_id,
            extra={"component": "chat", "channel": channel, "vod_id": vod_id},
        )

    async def _close(self, session: LiveSession) -> None:
        if self.recorder is not None:
            self.recorder.unbind(session.channel)
        self.sessions.pop(session.channel, None)
        self._pending.append(
            ReconcileRequest(session.vod_id, session.channel, session.started_at, utcnow(), session.stream_id)
        )
        await self._enqueue_pending()

    async def _enqueue_pending(self) -> None:
        """Enqueue reconciliations of ended streams; with the database away they stay pending
        here and the next poll tries again (recording of other streams goes on meanwhile)."""
        if not self._pending:
            return
        try:
            # Everything read for these streams is in the database before it can be moved.
            if self.recorder is not None:
                await self.recorder.writer.flush(timeout=60)
            while self._pending:
                await self.enqueue_reconcile(self._pending[0])
                self._pending.pop(0)
        except Exception as exc:
            log.warning(
                "reconciliation of %s not enqueued yet (%s: %s)",
                self._pending[0].placeholder,
                type(exc).__name__,
                exc,
                extra={"component": "chat"},
            )

    async def enqueue_reconcile(self, request: ReconcileRequest) -> None:
        await TaskQueue(self.engine).enqueue(
            TASK_KIND,
            request.payload(),
            max_attempts=self.reconcile_max_attempts,
            run_after=utcnow() + self.reconcile_delay,
            idempotency_key=f"{TASK_KIND}:{request.placeholder}",
        )
        log.info(
            "#%s went offline; reconciling %s in %s",
            request.channel,
            request.placeholder,
            self.reconcile_delay,
            extra={"component": "chat", "channel": request.channel},
        )

    async def _reconcile_orphans(self) -> None:
        """Placeholders of streams that ended while no recorder was running."""
        # The stream ended around its last chat line; the retry window counts from there. Within
        # one VOD rel_timestamp orders like timestamp, so idx_chat_vod_rel finds that line.
        rows = await placeholder_orphans(self.engine)
        for row in rows:
            if self.is_recording(row.twitch_vod_id) or row.date is None:
                continue
            await self.enqueue_reconcile(ReconcileRequest(row.twitch_vod_id, row.channel, row.date, row.ended))
