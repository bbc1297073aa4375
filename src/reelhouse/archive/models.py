"""Archive tables, with vod-tender's table and column names so its runbook SQL works as written
(`SELECT twitch_vod_id, processed, processing_error FROM vods ...`,
`SELECT vod_id, COUNT(*), MAX(timestamp) FROM chat_messages GROUP BY vod_id`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from reelhouse.core.db.models import metadata
from reelhouse.core.db.types import BigId, JsonText, UtcDateTime

channels = Table(
    "channels",
    metadata,
    Column("name", String(64), primary_key=True),  # Twitch login, lowercase
    Column("twitch_user_id", String(32)),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # Paused by an operator: listed, but not discovered and its chat not recorded.
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("source", String(16), nullable=False, server_default="api"),  # env | api | cli
    Column("created_at", UtcDateTime, nullable=False),
    # vod | live | both: download the VOD after the stream, record the live stream, or both with
    # the better copy kept (migration tl0001).
    Column("record_mode", String(8), nullable=False, server_default="vod"),
)

vods = Table(
    "vods",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False, server_default=""),
    Column("twitch_vod_id", String(64), nullable=False, unique=True),
    Column("title", Text),
    Column("date", UtcDateTime),
    Column("duration_seconds", Integer),
    Column("description", Text),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("skip_upload", Boolean, nullable=False, server_default=text("false")),
    # A live stream's chat is recorded under a placeholder (`live-<unix>`) until the real VOD
    # appears; placeholders never enter the download queue.
    Column("is_placeholder", Boolean, nullable=False, server_default=text("false")),
    Column("processed", Boolean, nullable=False, server_default=text("false")),
    Column("processing_error", Text),
    Column("download_state", Text),
    Column("download_retries", Integer, nullable=False, server_default="0"),
    Column("download_bytes", BigInteger, nullable=False, server_default="0"),
    Column("download_total", BigInteger, nullable=False, server_default="0"),
    Column("download_speed", Float),
    Column("download_eta_seconds", Float),
    Column("progress_updated_at", UtcDateTime),
    Column("downloaded_path", Text),
    Column("youtube_url", Text),
    Column("youtube_upload_uri", Text),  # the resumable session, so a restart resumes the upload
    Column("uploaded_at", UtcDateTime),
    Column("job_id", BigId),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime),
    Index("idx_vods_channel_date", "channel", "date"),
    Index("idx_vods_channel_processed", "channel", "processed", "priority", "date"),
)
# The VOD lists' order (newest first by date, else first seen; migration a0004).
Index("idx_vods_sort", func.coalesce(vods.c.date, vods.c.created_at).desc(), vods.c.id.desc())
Index("idx_vods_channel_sort", vods.c.channel, func.coalesce(vods.c.date, vods.c.created_at).desc(), vods.c.id.desc())

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("channel", String(64), primary_key=True, server_default=""),
    Column("access_token", Text),  # encrypted (envelope) when MASTER_ENCRYPTION_KEY is set
    Column("refresh_token", Text),
    Column("expires_at", UtcDateTime),
    Column("scope", Text),
    Column("encryption_version", Integer, nullable=False, server_default="0"),
    Column("encryption_key_id", String(64)),
    Column("updated_at", UtcDateTime),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False, server_default=""),
    # vods.twitch_vod_id, deliberately without a FOREIGN KEY: see migration a0002_chat_vod_fk.
    Column("vod_id", String(64), nullable=False),
    Column("message_id", String(64), nullable=False),  # Twitch's `id` tag; reconnect duplicates dropped
    Column("kind", String(16), nullable=False, server_default="message"),  # message|notice|clearchat|clearmsg
    Column("timestamp", UtcDateTime, nullable=False),  # absolute (tmi-sent-ts)
    Column("rel_timestamp", Float, nullable=False),  # seconds since the VOD started
    Column("user_id", String(32)),
    Column("username", String(64)),
    Column("display_name", String(64)),
    Column("message", Text),
    Column("badges", Text),
    Column("emotes", Text),
    Column("color", String(16)),
    Column("bits", Integer),
    Column("reply_to_id", String(64)),
    Column("reply_to_username", String(64)),
    Column("reply_to_message", Text),
    Column("tags", JsonText),  # text, not jsonb: see migration a0003_chat_ingest
    UniqueConstraint("message_id", name="uq_chat_messages_message_id"),
    # Replay, retention and "last line of a VOD" all go through this one; every extra index is
    # paid on each of tens of thousands of inserts a second.
    Index("idx_chat_vod_rel", "vod_id", "rel_timestamp", "id"),
)

chat_gaps = Table(
    "chat_gaps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("vod_id", String(64)),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("reason", Text),
)

# One live recording per stream (migration tl0001): keyed by the stream's chat placeholder
# (`live-<unix>`), linked to the real VOD once chat reconciliation finds it.
live_recordings = Table(
    "live_recordings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("placeholder", String(64), nullable=False, unique=True),
    Column("vod_id", String(64)),  # the real VOD, set by reconciliation
    Column("stream_id", String(64)),
    Column("broadcast_id", String(64)),  # usher's BROADCAST-ID: another one means another stream
    Column("started_at", UtcDateTime, nullable=False),  # Helix's started_at of the stream
    Column("mode", String(8), nullable=False),  # the channel's record_mode when recording began
    Column("state", String(16), nullable=False),  # recording | finished | failed | kept | discarded | cancelled
    Column("segments", Integer, nullable=False, server_default="0"),
    Column("ad_segments", Integer, nullable=False, server_default="0"),
    Column("lost_segments", Integer, nullable=False, server_default="0"),
    Column("discontinuities", Integer, nullable=False, server_default="0"),
    Column("last_sequence", BigInteger),
    Column("last_program_date", Text),  # PROGRAM-DATE-TIME of the last stored segment (ISO 8601)
    Column("first_elapsed", Float),  # broadcast seconds before the first stored segment (0: from the start)
    Column("recorded_seconds", Float, nullable=False, server_default="0"),
    Column("duration_seconds", Float),  # of the finished file (ffprobe)
    Column("path", Text),  # the finished MP4
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime),
    Index("idx_live_recordings_vod", "vod_id"),
)
