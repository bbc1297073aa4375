"""Live recording of watched channels: `channels.record_mode` and the `live_recordings` table.

`record_mode` is per channel: `vod` (download the archive VOD after the stream, as before),
`live` (record the live HLS while the channel is live, and use that as the VOD's file) or
`both` (record live and download the VOD; the better copy is kept). Existing channels keep
`vod`, so nothing changes for them.

Revision ID: tl0001_live_recordings
Revises: a0004_vods_sort_index
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "tl0001_live_recordings"
down_revision = "a0004_vods_sort_index"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("record_mode", sa.String(8), nullable=False, server_default="vod"))
    op.create_table(
        "live_recordings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("placeholder", sa.String(64), nullable=False, unique=True),
        sa.Column("vod_id", sa.String(64)),
        sa.Column("stream_id", sa.String(64)),
        sa.Column("broadcast_id", sa.String(64)),
        sa.Column("started_at", When, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("segments", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ad_segments", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lost_segments", sa.Integer, nullable=False, server_default="0"),
        sa.Column("discontinuities", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_sequence", sa.BigInteger),
        sa.Column("last_program_date", sa.Text),
        sa.Column("first_elapsed", sa.Float),
        sa.Column("recorded_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("path", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When),
    )
    op.create_index("idx_live_recordings_vod", "live_recordings", ["vod_id"])


def downgrade() -> None:
    op.drop_index("idx_live_recordings_vod", table_name="live_recordings")
    op.drop_table("live_recordings")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("record_mode")
