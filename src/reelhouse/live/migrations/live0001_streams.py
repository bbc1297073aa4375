"""Live tables: streams, stream_destinations, stream_recordings, restreams.

Revision ID: live0001_streams
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "live0001_streams"
down_revision = None
branch_labels = ("live",)
depends_on = "0001_core"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", BigId, nullable=True),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("playback_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_hint", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("record", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_live", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("session", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ingest_client", sa.String(32), nullable=True),
        sa.Column("live_since", Ts, nullable=True),
        sa.Column("last_live_at", Ts, nullable=True),
        sa.Column("job_id", BigId, nullable=True),
        sa.Column("telemetry", JsonDoc, nullable=True),
        sa.Column("telemetry_at", Ts, nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_streams_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streams")),
        sa.UniqueConstraint("playback_id", name=op.f("uq_streams_playback_id")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_streams_key_hash")),
    )
    # Seed 002's tuning index: the live streams of a user.
    op.create_index(
        "idx_streams_user_live",
        "streams",
        ["user_id"],
        postgresql_where=sa.text("is_live = true"),
        sqlite_where=sa.text("is_live = 1"),
    )
    op.create_table(
        "stream_destinations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("stream_id", BigId, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("state", sa.String(16), server_default="idle", nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("reconnects", sa.Integer(), server_default="0", nullable=False),
        sa.Column("task_id", BigId, nullable=True),
        sa.Column("state_at", Ts, nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["stream_id"], ["streams.id"], name=op.f("fk_stream_destinations_stream_id_streams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_destinations")),
    )
    op.create_index("ix_stream_destinations_stream_id", "stream_destinations", ["stream_id"])
    op.create_table(
        "stream_recordings",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("stream_id", BigId, nullable=False),
        sa.Column("session", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("segments", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("source_key", sa.Text(), nullable=True),
        sa.Column("encode_job_id", BigId, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", Ts, nullable=False),
        sa.Column("ended_at", Ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["stream_id"], ["streams.id"], name=op.f("fk_stream_recordings_stream_id_streams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_recordings")),
        sa.UniqueConstraint("stream_id", "session", name=op.f("uq_stream_recordings_stream_id_session")),
    )
    op.create_table(
        "restreams",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", BigId, nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_kind", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("job_id", BigId, nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_restreams_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restreams")),
    )


def downgrade() -> None:
    op.drop_table("restreams")
    op.drop_table("stream_recordings")
    op.drop_index("ix_stream_destinations_stream_id", table_name="stream_destinations")
    op.drop_table("stream_destinations")
    op.drop_index("idx_streams_user_live", table_name="streams")
    op.drop_table("streams")
