"""Core tables. Domains declare their own tables on the same `metadata` in their packages.

Table and column names follow the runbooks: `jobs(user_id, created_at)` and
`tasks(job_id, status)` (WebEncode's tuning SQL), `kv(channel, key, value)` with the circuit
breaker keys (vod-tender), `audit_log` (LegacyVideo).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from reelhouse.core.db.types import BigId, JsonDoc, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(120), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UtcDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(120), nullable=False),
    # sha256 of the token: tokens are random 32-byte secrets, so a fast hash is enough
    # and lets us look them up by hash on every request.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("revoked", Boolean, nullable=False, server_default=text("false")),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="SET NULL")),
    Column("kind", String(64), nullable=False),
    # queued | processing | completed | failed | cancelled | dead (WebEncode's job_status names,
    # so its runbook's `WHERE status != 'completed'` index means what it says).
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("idempotency_key", String(255), unique=True),
    Column("payload", JsonDoc, nullable=False),
    Column("result", JsonDoc),
    Column("error", Text),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("correlation_id", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
    Index("ix_jobs_status_created_at", "status", "created_at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(64), nullable=False),
    # queued | running | succeeded | failed | cancelled | dead (see core/jobs/states.py)
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("idempotency_key", String(255), unique=True),
    Column("payload", JsonDoc, nullable=False),
    Column("result", JsonDoc),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="5"),
    Column("run_after", UtcDateTime, nullable=False),
    Column("lease_owner", String(255)),
    Column("lease_expires_at", UtcDateTime),
    Column("heartbeat_at", UtcDateTime),
    Column("timeout_seconds", Float),
    Column("required_capability", String(64)),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("last_error", Text),
    Column("error_class", String(16)),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("progress_detail", JsonDoc),
    Column("correlation_id", String(64)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Index("ix_tasks_job_id_status", "job_id", "status"),
    # The claim scans queued tasks in priority order; running ones are scanned for expired leases.
    Index("ix_tasks_claim", "status", "priority", "run_after"),
    Index("ix_tasks_lease", "status", "lease_expires_at"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("capabilities", JsonDoc, nullable=False),
    Column("kinds", JsonDoc, nullable=False),
    Column("current_task_ids", JsonDoc, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_heartbeat", UtcDateTime, nullable=False),
)

kv = Table(
    "kv",
    metadata,
    Column("channel", String(255), primary_key=True, server_default=""),
    Column("key", String(255), primary_key=True),
    Column("value", Text),
    Column("updated_at", UtcDateTime),
)

# One row per (periodic task, period start): the insert that wins is the scheduler that enqueues.
periodic_runs = Table(
    "periodic_runs",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("period_start", UtcDateTime, primary_key=True),
    Column("task_id", BigId),
    Column("created_at", UtcDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(128), nullable=False),
    Column("target", String(255)),
    Column("details", JsonDoc, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("hash"),
)
