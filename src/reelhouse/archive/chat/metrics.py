"""Chat metrics, with the names vod-tender's dashboards and alerts query (seed 003), all of them
updated by the recorder and the writer (vod-tender defined the first two and never touched
them, reference §6.1)."""

from __future__ import annotations

from reelhouse.core.telemetry.metrics import counter, histogram

MESSAGES_RECORDED = counter("chat_messages_recorded", "Chat messages and events stored, by channel", ("channel",))
RECONNECTIONS = counter("chat_reconnections", "Chat connections lost and re-established")
MESSAGES_DROPPED = counter(
    "chat_messages_dropped",
    "Chat messages not stored: buffer full (client_buffer, writer_queue) or rejected by the database (invalid)",
    ("reason",),
)
MESSAGES_LATE = counter(
    "chat_messages_late",
    "Chat messages that waited longer than CHAT_LATE_AFTER in the reader's buffer, or between leaving it and "
    "their commit (each stage is measured on its own)",
)
BATCH_WRITE_SECONDS = histogram(
    "chat_batch_write_seconds",
    "Time to write one batch of chat messages to the database",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GAPS = counter("chat_gaps", "Intervals in which a channel's chat was not received", ("channel",))
