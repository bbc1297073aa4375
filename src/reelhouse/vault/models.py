"""Vault tables, named as LegacyVideo named them (`legacy_plans`, `video_messages`, `recipients`,
`verifiers`, `release_requests`, `release_approvals`, `recipient_access`) plus what it lacked:
`message_recipients` (recipients are people of a plan, assigned to messages), `vault_links`
(hashed single-purpose tokens), `vault_outbox` (one row per mail, the exactly-once ledger) and
`message_views`. Emails are stored to send mail and nowhere else: audit rows hold ids only.
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
    text,
)

from reelhouse.core.db.models import metadata
from reelhouse.core.db.types import BigId, JsonDoc, UtcDateTime

PLAN_ACTIVE, PLAN_SUSPENDED, PLAN_RELEASED = "active", "suspended", "released"

MSG_DRAFT, MSG_PROCESSING, MSG_READY, MSG_FAILED = "draft", "processing", "ready", "failed"
MSG_RELEASED, MSG_REVOKED = "released", "revoked"

VERIFIER_INVITED, VERIFIER_ACCEPTED, VERIFIER_DECLINED, VERIFIER_REVOKED = "invited", "accepted", "declined", "revoked"

REQ_PENDING, REQ_WAITING, REQ_RELEASED = "pending", "waiting", "released"
REQ_VETOED, REQ_DENIED, REQ_CANCELLED, REQ_EXPIRED = "vetoed", "denied", "cancelled", "expired"
REQ_OPEN = (REQ_PENDING, REQ_WAITING)
REQ_STATES = (REQ_PENDING, REQ_WAITING, REQ_RELEASED, REQ_VETOED, REQ_DENIED, REQ_CANCELLED, REQ_EXPIRED)

MAIL_PENDING, MAIL_SENDING, MAIL_SENT, MAIL_UNCONFIRMED, MAIL_FAILED = (
    "pending",
    "sending",
    "sent",
    "unconfirmed",
    "failed",
)
MAIL_STATES = (MAIL_PENDING, MAIL_SENDING, MAIL_SENT, MAIL_UNCONFIRMED, MAIL_FAILED)

plans = Table(
    "legacy_plans",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("owner_user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("owner_email", String(254), nullable=False),
    Column("title", String(100), nullable=False),
    Column("description", String(500)),
    Column("approval_threshold", Integer, nullable=False),
    Column("total_verifiers", Integer, nullable=False),
    Column("waiting_period_seconds", Integer, nullable=False),
    Column("checkin_interval_seconds", Integer),
    Column("last_checkin_at", UtcDateTime),
    Column("checkin_reminders_sent", Integer, nullable=False, server_default="0"),
    Column("checkins_missed", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("released_at", UtcDateTime),
    Index("ix_legacy_plans_owner_user_id", "owner_user_id"),
    Index("ix_legacy_plans_status", "status"),
)

messages = Table(
    "video_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", String(1000)),
    Column("kind", String(8), nullable=False, server_default="video"),  # video | audio
    Column("status", String(16), nullable=False),
    # The message's data key, envelope-encrypted under the master key (core.security.crypto),
    # bound to this row; key_id names the master key that wraps it (rotate-key moves it).
    Column("wrapped_key", Text),
    Column("key_id", String(16)),
    Column("source_key", Text),  # encrypted upload awaiting transcode
    Column("media_key", Text),  # encrypted playable rendition
    Column("content_type", String(64)),
    Column("media_bytes", BigInteger),  # plaintext size of the rendition
    Column("cipher_bytes", BigInteger),
    Column("duration_seconds", Float),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("uploaded_at", UtcDateTime),
    Column("ready_at", UtcDateTime),
    Column("released_at", UtcDateTime),
    Index("ix_video_messages_plan_id", "plan_id"),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("name", String(100)),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("plan_id", "email"),
)

message_recipients = Table(
    "message_recipients",
    metadata,
    Column("message_id", BigId, ForeignKey("video_messages.id", ondelete="CASCADE"), primary_key=True),
    Column("recipient_id", BigId, ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True),
)

verifiers = Table(
    "verifiers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="SET NULL")),
    Column("email", String(254), nullable=False),
    Column("name", String(100)),
    Column("status", String(16), nullable=False),
    Column("invited_at", UtcDateTime, nullable=False),
    Column("invite_expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("plan_id", "email"),
    Index("ix_verifiers_user_id", "user_id"),
)

requests = Table(
    "release_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("initiator_verifier_id", BigId, ForeignKey("verifiers.id", ondelete="SET NULL")),
    Column("origin", String(16), nullable=False),  # verifier | checkin
    Column("status", String(16), nullable=False),
    Column("note", String(1000)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("approved_at", UtcDateTime),
    Column("release_at", UtcDateTime),
    Column("next_reminder_at", UtcDateTime),
    Column("reminders_sent", Integer, nullable=False, server_default="0"),
    Column("frozen_at", UtcDateTime),
    Column("frozen_by", String(255)),
    Column("force_requested_by", String(255)),
    Column("force_requested_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("closed_by", String(255)),
    Index("ix_release_requests_plan_id", "plan_id"),
    Index("ix_release_requests_status", "status"),
    # At most one open request per plan, whatever races the application logic loses.
    Index(
        "uq_release_requests_open_plan",
        "plan_id",
        unique=True,
        sqlite_where=text("status IN ('pending', 'waiting')"),
        postgresql_where=text("status IN ('pending', 'waiting')"),
    ),
)

votes = Table(
    "release_approvals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", BigId, ForeignKey("release_requests.id", ondelete="CASCADE"), nullable=False),
    Column("verifier_id", BigId, ForeignKey("verifiers.id", ondelete="CASCADE"), nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("note", String(500)),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("request_id", "verifier_id"),
)

grants = Table(
    "recipient_access",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recipient_id", BigId, ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", BigId, ForeignKey("video_messages.id", ondelete="CASCADE"), nullable=False),
    Column("request_id", BigId, ForeignKey("release_requests.id", ondelete="SET NULL")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("first_viewed_at", UtcDateTime),
    Column("view_count", Integer, nullable=False, server_default="0"),
    UniqueConstraint("recipient_id", "message_id"),
)

views = Table(
    "message_views",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("access_id", BigId, ForeignKey("recipient_access.id", ondelete="CASCADE"), nullable=False),
    Column("viewed_at", UtcDateTime, nullable=False),
    Index("ix_message_views_access_id", "access_id"),
)

links = Table(
    "vault_links",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("purpose", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("verifier_id", BigId, ForeignKey("verifiers.id", ondelete="CASCADE")),
    Column("recipient_id", BigId, ForeignKey("recipients.id", ondelete="CASCADE")),
    Column("request_id", BigId, ForeignKey("release_requests.id", ondelete="CASCADE")),
    Column("outbox_id", BigId),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Index("ix_vault_links_plan_id", "plan_id"),
)

outbox = Table(
    "vault_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", BigId, ForeignKey("legacy_plans.id", ondelete="CASCADE"), nullable=False),
    Column("template", String(32), nullable=False),
    Column("to_email", String(254), nullable=False),
    Column("recipient_id", BigId, ForeignKey("recipients.id", ondelete="CASCADE")),
    Column("verifier_id", BigId, ForeignKey("verifiers.id", ondelete="CASCADE")),
    Column("request_id", BigId, ForeignKey("release_requests.id", ondelete="CASCADE")),
    Column("context", JsonDoc, nullable=False),  # ids and numbers for the template; never tokens
    Column("dedupe_key", String(255), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("message_id", String(255), nullable=False),
    Column("provider_id", String(255)),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Index("ix_vault_outbox_plan_id_state", "plan_id", "state"),
)
