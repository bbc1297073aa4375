"""Archive tables: channels, vods, oauth_tokens, chat_messages, chat_gaps.

Revision ID: a0001_archive
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "a0001_archive"
down_revision = None
branch_labels = ("archive",)
depends_on = "0001_core"


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("twitch_user_id", sa.String(length=32), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("source", sa.String(length=16), server_default="api", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channels")),
    )
    op.create_table(
        "chat_gaps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("vod_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_gaps")),
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), server_default="", nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("encryption_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("encryption_key_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("provider", "channel", name=op.f("pk_oauth_tokens")),
    )
    op.create_table(
        "vods",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=64), server_default="", nullable=False),
        sa.Column("twitch_vod_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("skip_upload", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_placeholder", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("processed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("processing_error", sa.Text(), nullable=True),
        sa.Column("download_state", sa.Text(), nullable=True),
        sa.Column("download_retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("download_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("download_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("download_speed", sa.Float(), nullable=True),
        sa.Column("download_eta_seconds", sa.Float(), nullable=True),
        sa.Column("progress_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("downloaded_path", sa.Text(), nullable=True),
        sa.Column("youtube_url", sa.Text(), nullable=True),
        sa.Column("youtube_upload_uri", sa.Text(), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vods")),
        sa.UniqueConstraint("twitch_vod_id", name=op.f("uq_vods_twitch_vod_id")),
    )
    with op.batch_alter_table("vods", schema=None) as batch_op:
        batch_op.create_index("idx_vods_channel_date", ["channel", "date"], unique=False)
        batch_op.create_index("idx_vods_channel_processed", ["channel", "processed", "priority", "date"], unique=False)

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=64), server_default="", nullable=False),
        sa.Column("vod_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="message", nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rel_timestamp", sa.Float(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("display_name", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("badges", sa.Text(), nullable=True),
        sa.Column("emotes", sa.Text(), nullable=True),
        sa.Column("color", sa.String(length=16), nullable=True),
        sa.Column("bits", sa.Integer(), nullable=True),
        sa.Column("reply_to_id", sa.String(length=64), nullable=True),
        sa.Column("reply_to_username", sa.String(length=64), nullable=True),
        sa.Column("reply_to_message", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
        sa.ForeignKeyConstraint(
            ["vod_id"],
            ["vods.twitch_vod_id"],
            name=op.f("fk_chat_messages_vod_id_vods"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("message_id", name="uq_chat_messages_message_id"),
    )
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.create_index("idx_chat_vod_abs", ["vod_id", "timestamp"], unique=False)
        batch_op.create_index("idx_chat_vod_rel", ["vod_id", "rel_timestamp", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index("idx_chat_vod_rel")
        batch_op.drop_index("idx_chat_vod_abs")

    op.drop_table("chat_messages")
    with op.batch_alter_table("vods", schema=None) as batch_op:
        batch_op.drop_index("idx_vods_channel_processed")
        batch_op.drop_index("idx_vods_channel_date")

    op.drop_table("vods")
    op.drop_table("oauth_tokens")
    op.drop_table("chat_gaps")
    op.drop_table("channels")
