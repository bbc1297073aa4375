"""Live tables: streams (seed 002's `streams` with `user_id` and `is_live`), their restream
destinations, recordings (one per publish session) and file/URL restreams."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text

from reelhouse.core.db.models import metadata
from reelhouse.core.db.types import BigId, JsonDoc, UtcDateTime

streams = Table(
    "streams",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE")),
    Column("title", String(100), nullable=False),
    Column("description", String(500)),
    # The public name of the live output; never the publish key (WebEncode used the key for both).
    Column("playback_id", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 of the publish key
    Column("key_hint", String(16), nullable=False),  # the key's first characters, for lists
    Column("profile", String(64), nullable=False),
    Column("record", Boolean, nullable=False, server_default=text("true")),
    Column("is_live", Boolean, nullable=False, server_default=text("false")),
    Column("session", Integer, nullable=False, server_default="0"),  # publishes so far
    Column("ingest_client", String(32)),  # nginx's client id of the live publisher
    Column("live_since", UtcDateTime),
    Column("last_live_at", UtcDateTime),
    Column("job_id", BigId),  # the live job of the current or last session
    Column("telemetry", JsonDoc),
    Column("telemetry_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(
        "idx_streams_user_live", "user_id", postgresql_where=text("is_live = true"), sqlite_where=text("is_live = 1")
    ),
)

destinations = Table(
    "stream_destinations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("stream_id", BigId, ForeignKey("streams.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("url", Text, nullable=False),  # rtmp(s)://host/app, without the key
    Column("key_ciphertext", Text),  # the destination's stream key, encrypted (core/security)
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("state", String(16), nullable=False, server_default="idle"),
    Column("last_error", String(500)),
    Column("reconnects", Integer, nullable=False, server_default="0"),
    Column("task_id", BigId),
    Column("state_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_stream_destinations_stream_id", "stream_id"),
)

recordings = Table(
    "stream_recordings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("stream_id", BigId, ForeignKey("streams.id", ondelete="CASCADE"), nullable=False),
    Column("session", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # recording | finalizing | encoding | empty | failed
    Column("segments", Integer, nullable=False, server_default="0"),
    Column("duration", Float),
    Column("source_key", Text),  # the remuxed MP4 in storage
    Column("encode_job_id", BigId),
    Column("error", Text),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    UniqueConstraint("stream_id", "session"),
)

restreams = Table(
    "restreams",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE")),
    Column("source", Text, nullable=False),  # a storage key or an http(s) URL
    Column("source_kind", String(8), nullable=False),  # key | url
    Column("url", Text, nullable=False),
    Column("key_ciphertext", Text),
    Column("mode", String(8), nullable=False),  # once | loop
    Column("state", String(16), nullable=False),
    Column("last_error", String(500)),
    Column("job_id", BigId),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

recording_states = ("recording", "finalizing", "encoding", "empty", "failed")
