"""The recorder: one chat client's events -> rows for the writer, per channel under the VOD that
channel is currently bound to.

Bindings change while the client keeps running (auto mode binds a channel when its stream goes
live and unbinds it when it ends), so one connection serves every channel and a stream that
starts while another is being reconciled is recorded all the same (vod-tender's single
`running` flag blocked it, reference §12.14). Chat of an unbound channel is kept for a few
minutes in a small pre-roll buffer: Helix reports a stream up to a poll interval late, and the
messages sent since its `started_at` are then recorded instead of lost.

Manual mode is a binding made once at start (`ensure_vod` creates the VOD row first, which
vod-tender never did, reference §12.15).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reelhouse.archive.chat import metrics
from reelhouse.archive.chat.rows import RecordableEvent, build_row, event_time
from reelhouse.archive.chat.writer import ChatWriter, GapRow
from reelhouse.archive.twitch.chat_delivery import Gap
from reelhouse.archive.twitch.chat_events import ChatMessage, ClearChat, ClearMsg, UserNotice
from reelhouse.archive.twitch.irc_client import TwitchChatClient
from reelhouse.core.db.types import utcnow

log = logging.getLogger("reelhouse.archive.chat.recorder")

_RECORDABLE = (ChatMessage, UserNotice, ClearChat, ClearMsg)


@dataclass(frozen=True, slots=True)
class Binding:
    channel: str
    vod_id: str
    started_at: datetime

    @property
    def start_unix(self) -> float:
        return self.started_at.timestamp()


class ChatRecorder:
    def __init__(
        self,
        client: TwitchChatClient,
        writer: ChatWriter,
        *,
        pre_roll: timedelta = timedelta(minutes=5),
        pre_roll_max: int = 20_000,
    ) -> None:
        self.client = client
        self.writer = writer
        self._bindings: dict[str, Binding] = {}
        self._pre_roll = pre_roll.total_seconds()
        self._pre_roll_max = pre_roll_max
        self._unbound: dict[str, deque[tuple[float, datetime, RecordableEvent]]] = {}
        self._seen = {"reconnections": 0, "dropped": 0, "late": 0}
        self.events_seen = 0

    @property
    def bindings(self) -> dict[str, Binding]:
        return dict(self._bindings)

    def bind(self, channel: str, vod_id: str, started_at: datetime) -> Binding:
        """Record `channel` under `vod_id` from now on, plus the pre-roll sent since started_at."""
        binding = Binding(channel, vod_id, started_at)
        self._bindings[channel] = binding
        buffered = self._unbound.pop(channel, None) or ()
        replayed = 0
        for received, received_at, event in buffered:
            if event_time(event, received_at) >= started_at:
                self.writer.submit(build_row(event, vod_id, binding.start_unix, received_at), received)
                replayed += 1
        log.info(
            "chat of #%s recorded under vod %s (%d pre-roll messages)",
            channel,
            vod_id,
            replayed,
            extra={"component": "chat", "channel": channel, "vod_id": vod_id},
        )
        return binding

    def unbind(self, channel: str) -> Binding | None:
        binding = self._bindings.pop(channel, None)
        if binding is not None:
            log.info(
                "chat of #%s no longer recorded under vod %s",
                channel,
                binding.vod_id,
                extra={"component": "chat", "channel": channel, "vod_id": binding.vod_id},
            )
        return binding

    async def run(self) -> None:
        """Consume the client's events until the client is stopped and drained."""
        try:
            async for batch in self.client.event_batches():
                received = time.monotonic()
                for event in batch:
                    if isinstance(event, _RECORDABLE):
                        self._record(event, received)
                    elif isinstance(event, Gap):
                        self._record_gap(event)
                seen, self.events_seen = self.events_seen, self.events_seen + len(batch)
                if seen // 1000 != self.events_seen // 1000:
                    self.sync_client_metrics()  # drops/late of the reader show up while they happen
        finally:
            self.sync_client_metrics()

    def _record(self, event: RecordableEvent, received: float) -> None:
        binding = self._bindings.get(event.channel)
        if binding is None:
            self._keep_pre_roll(event, received)
            return
        # The reader's buffer hands events over in arrival order, so "now" is close enough to
        # the arrival time for rows without a server timestamp.
        received_at = None if event.sent_at is not None else utcnow()
        self.writer.submit(build_row(event, binding.vod_id, binding.start_unix, received_at), received)

    def _keep_pre_roll(self, event: RecordableEvent, received: float) -> None:
        buffer = self._unbound.get(event.channel)
        if buffer is None:
            buffer = self._unbound[event.channel] = deque(maxlen=self._pre_roll_max)
        buffer.append((received, event.sent_at or utcnow(), event))
        while buffer and received - buffer[0][0] > self._pre_roll:
            buffer.popleft()

    def _record_gap(self, gap: Gap) -> None:
        metrics.GAPS.labels(gap.channel).inc()
        self.sync_client_metrics()
        binding = self._bindings.get(gap.channel)
        self.writer.submit_gap(
            GapRow(gap.channel, binding.vod_id if binding else None, gap.started_at, gap.ended_at, gap.reason)
        )

    def sync_client_metrics(self) -> None:
        """Mirror the client's counters into Prometheus (the client keeps plain integers)."""
        stats = self.client.stats
        for name, counter in (
            ("reconnections", metrics.RECONNECTIONS),
            ("dropped", metrics.MESSAGES_DROPPED.labels("client_buffer")),
            ("late", metrics.MESSAGES_LATE),
        ):
            value = getattr(stats, name)
            if value > self._seen[name]:
                counter.inc(value - self._seen[name])
                self._seen[name] = value


def manual_start(vod_start: datetime | None) -> datetime:
    """TWITCH_VOD_START, or now (vod-tender's default)."""
    return (vod_start or datetime.now(UTC)).astimezone(UTC)
