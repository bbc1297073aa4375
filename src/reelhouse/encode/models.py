"""Encode tables: custom profiles as data, assets (one per encode job) and their renditions.

An asset row exists only while its job is encoding or once it finished: the probe task creates
it, a cancelled job deletes it with its outputs, a failed one keeps it as `failed` (outputs
removed) so a retry picks it up again.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from reelhouse.core.db.models import metadata
from reelhouse.core.db.types import BigId, JsonDoc, UtcDateTime

ASSET_ENCODING = "encoding"
ASSET_READY = "ready"
ASSET_FAILED = "failed"

profiles = Table(
    "profiles",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # hls | mp4
    # The validated `Profile` as a dict: renditions, segment_seconds. Encodes snapshot it into
    # the job payload, so editing a profile never changes a job already submitted.
    Column("definition", JsonDoc, nullable=False),
    Column("created_by", String(255)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

assets = Table(
    "assets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # SET NULL: purging old job rows must not orphan outputs that are still being served.
    # One asset per profile of the job (a multi-profile job has several).
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="SET NULL")),
    Column("status", String(16), nullable=False),
    Column("source_kind", String(8), nullable=False),  # upload | url | key
    Column("source_key", Text, nullable=False),
    Column("source_url", Text),
    Column("profile_name", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # hls | mp4
    # Unique: two jobs writing one prefix would overwrite, and a cancel would delete, the other's files.
    Column("output_prefix", String(1024), nullable=False, unique=True),
    Column("master_key", Text),  # master playlist (hls) or the file (mp4) once ready
    Column("probe", JsonDoc),
    Column("duration", Float),
    Column("width", Integer),
    Column("height", Integer),
    Column("size_bytes", BigInteger),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime),
    Index("ix_assets_status_created_at", "status", "created_at"),
    UniqueConstraint("job_id", "profile_name"),
)

renditions = Table(
    "renditions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("asset_id", BigId, ForeignKey("assets.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bandwidth", Integer, nullable=False),  # peak bits/s, as in the master playlist
    Column("codecs", String(128)),
    Column("storage_key", Text, nullable=False),  # variant playlist (hls) or the mp4 file
    Column("content_type", String(64), nullable=False),
    Column("segment_count", Integer),
    Column("size_bytes", BigInteger),
    Index("ix_renditions_asset_id", "asset_id"),
)

SEGMENT_PENDING = "pending"
SEGMENT_DONE = "done"

# The pieces of a segment-parallel encode: one row per (rung, piece), created by the probe,
# marked done (with the stored piece) by its `encode.segment` task in a fenced transaction;
# the task that marks the last one enqueues the stitch.
encode_segments = Table(
    "encode_segments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("asset_id", BigId, ForeignKey("assets.id", ondelete="CASCADE"), nullable=False),
    Column("rung", String(32), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("start_seconds", Float, nullable=False),
    Column("end_seconds", Float),  # None: to the end of the source
    Column("status", String(16), nullable=False),
    Column("storage_key", Text),
    Column("size_bytes", BigInteger),
    Column("encode_seconds", Float),
    UniqueConstraint("asset_id", "rung", "idx"),
)

# Webhooks (WebEncode's, signed and retried): the secret is stored encrypted under the master
# key (`secret_enc`, core/security envelope encryption) and never returned by the API.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("events", JsonDoc, nullable=False),  # event types, or ["*"]
    Column("secret_enc", Text),
    Column("is_active", Boolean, nullable=False),
    # Consecutive failed delivery attempts; reset by a success; WEBHOOK_DISABLE_AFTER disables.
    Column("failure_count", Integer, nullable=False),
    Column("disabled_reason", Text),
    Column("last_triggered_at", UtcDateTime),
    Column("created_by", String(255)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Every delivery attempt: the per-webhook delivery log.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", BigId, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer),
    Column("succeeded", Boolean, nullable=False),
    Column("error", Text),
    Column("duration_ms", Integer),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
)

# Job and worker events, once each: the unique key settles a race between API nodes that saw
# the same change, so each event is delivered (and counted) once.
encode_events = Table(
    "encode_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_key", String(200), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("job_id", BigInteger),
    Column("subject", String(255)),
    Column("data", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_encode_events_job_id_id", "job_id", "id"),
    Index("ix_encode_events_subject_id", "subject", "id"),
)
