"""Encode tables: custom profiles as data, assets (one per encode job) and their renditions.

An asset row exists only while its job is encoding or once it finished: the probe task creates
it, a cancelled job deletes it with its outputs, a failed one keeps it as `failed` (outputs
removed) so a retry picks it up again.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Table, Text

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
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="SET NULL"), unique=True),
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
