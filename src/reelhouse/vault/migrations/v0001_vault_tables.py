"""Vault tables: plans, messages, recipients, verifiers, release requests and votes, access
grants, views, hashed links and the mail outbox.

Revision ID: v0001_vault
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "v0001_vault"
down_revision = None
branch_labels = ("vault",)
depends_on = "0001_core"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "legacy_plans",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("owner_user_id", BigId, nullable=False),
        sa.Column("owner_email", sa.String(length=254), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("approval_threshold", sa.Integer(), nullable=False),
        sa.Column("total_verifiers", sa.Integer(), nullable=False),
        sa.Column("waiting_period_seconds", sa.Integer(), nullable=False),
        sa.Column("checkin_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("last_checkin_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checkin_reminders_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("checkins_missed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_user_id"], ["users.id"], name=op.f("fk_legacy_plans_owner_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legacy_plans")),
    )
    op.create_index("ix_legacy_plans_owner_user_id", "legacy_plans", ["owner_user_id"], unique=False)
    op.create_index("ix_legacy_plans_status", "legacy_plans", ["status"], unique=False)
    op.create_table(
        "recipients",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_recipients_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
        sa.UniqueConstraint("plan_id", "email", name=op.f("uq_recipients_plan_id_email")),
    )
    op.create_table(
        "verifiers",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_verifiers_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_verifiers_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifiers")),
        sa.UniqueConstraint("plan_id", "email", name=op.f("uq_verifiers_plan_id_email")),
    )
    op.create_index("ix_verifiers_user_id", "verifiers", ["user_id"], unique=False)
    op.create_table(
        "video_messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("kind", sa.String(length=8), server_default="video", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.Column("source_key", sa.Text(), nullable=True),
        sa.Column("media_key", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=64), nullable=True),
        sa.Column("media_bytes", sa.BigInteger(), nullable=True),
        sa.Column("cipher_bytes", sa.BigInteger(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_video_messages_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_messages")),
    )
    op.create_index("ix_video_messages_plan_id", "video_messages", ["plan_id"], unique=False)
    op.create_table(
        "message_recipients",
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("recipient_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["video_messages.id"],
            name=op.f("fk_message_recipients_message_id_video_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_message_recipients_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "recipient_id", name=op.f("pk_message_recipients")),
    )
    op.create_table(
        "release_requests",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("initiator_verifier_id", BigId, nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_reminder_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("frozen_by", sa.String(length=255), nullable=True),
        sa.Column("force_requested_by", sa.String(length=255), nullable=True),
        sa.Column("force_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["initiator_verifier_id"],
            ["verifiers.id"],
            name=op.f("fk_release_requests_initiator_verifier_id_verifiers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_release_requests_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_requests")),
    )
    op.create_index("ix_release_requests_plan_id", "release_requests", ["plan_id"], unique=False)
    op.create_index("ix_release_requests_status", "release_requests", ["status"], unique=False)
    op.create_index(
        "uq_release_requests_open_plan",
        "release_requests",
        ["plan_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('pending', 'waiting')"),
        postgresql_where=sa.text("status IN ('pending', 'waiting')"),
    )
    op.create_table(
        "recipient_access",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("recipient_id", BigId, nullable=False),
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("request_id", BigId, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_viewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("view_count", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["video_messages.id"],
            name=op.f("fk_recipient_access_message_id_video_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_recipient_access_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["release_requests.id"],
            name=op.f("fk_recipient_access_request_id_release_requests"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient_access")),
        sa.UniqueConstraint("recipient_id", "message_id", name=op.f("uq_recipient_access_recipient_id_message_id")),
    )
    op.create_table(
        "release_approvals",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("request_id", BigId, nullable=False),
        sa.Column("verifier_id", BigId, nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["release_requests.id"],
            name=op.f("fk_release_approvals_request_id_release_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["verifier_id"],
            ["verifiers.id"],
            name=op.f("fk_release_approvals_verifier_id_verifiers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_approvals")),
        sa.UniqueConstraint("request_id", "verifier_id", name=op.f("uq_release_approvals_request_id_verifier_id")),
    )
    op.create_table(
        "vault_links",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("verifier_id", BigId, nullable=True),
        sa.Column("recipient_id", BigId, nullable=True),
        sa.Column("request_id", BigId, nullable=True),
        sa.Column("outbox_id", BigId, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_vault_links_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["recipients.id"], name=op.f("fk_vault_links_recipient_id_recipients"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["release_requests.id"],
            name=op.f("fk_vault_links_request_id_release_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["verifier_id"], ["verifiers.id"], name=op.f("fk_vault_links_verifier_id_verifiers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_vault_links_token_hash")),
    )
    op.create_index("ix_vault_links_plan_id", "vault_links", ["plan_id"], unique=False)
    op.create_table(
        "vault_outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("plan_id", BigId, nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column("to_email", sa.String(length=254), nullable=False),
        sa.Column("recipient_id", BigId, nullable=True),
        sa.Column("verifier_id", BigId, nullable=True),
        sa.Column("request_id", BigId, nullable=True),
        sa.Column("context", JsonDoc, nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["legacy_plans.id"], name=op.f("fk_vault_outbox_plan_id_legacy_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_vault_outbox_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["release_requests.id"],
            name=op.f("fk_vault_outbox_request_id_release_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["verifier_id"], ["verifiers.id"], name=op.f("fk_vault_outbox_verifier_id_verifiers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_vault_outbox_dedupe_key")),
    )
    op.create_index("ix_vault_outbox_plan_id_state", "vault_outbox", ["plan_id", "state"], unique=False)
    op.create_table(
        "message_views",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("access_id", BigId, nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_id"],
            ["recipient_access.id"],
            name=op.f("fk_message_views_access_id_recipient_access"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_views")),
    )
    op.create_index("ix_message_views_access_id", "message_views", ["access_id"], unique=False)


def downgrade() -> None:
    op.drop_table("message_views")
    op.drop_table("vault_outbox")
    op.drop_table("vault_links")
    op.drop_table("release_approvals")
    op.drop_table("recipient_access")
    op.drop_table("release_requests")
    op.drop_table("message_recipients")
    op.drop_table("video_messages")
    op.drop_table("verifiers")
    op.drop_table("recipients")
    op.drop_table("legacy_plans")
