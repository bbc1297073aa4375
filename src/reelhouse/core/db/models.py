"""Core tables. Domains declare their own tables on the same `metadata` in their packages.

Table and column names follow the runbooks: `jobs(user_id, created_at)` and
`tasks(job_id, status)` (WebEncode's tuning SQL), `kv(channel, key, value)` with the circuit
breaker keys (vod-tender), `audit_log` (LegacyVideo).
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
    # "login" (a session from POST /auth/login: sliding expiry) or "api" (created by name).
    Column("kind", String(16), nullable=False, server_default="api"),
    Index("ix_api_tokens_user_id", "user_id"),
)

# A user signed in through OIDC: the provider's (issuer, subject) pair names the account, never
# the username claim, so a provider user called "admin" does not become the local admin.
oidc_identities = Table(
    "oidc_identities",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("issuer", String(500), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_login_at", UtcDateTime),
    UniqueConstraint("issuer", "subject"),
    Index("ix_oidc_identities_user_id", "user_id"),
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
    # Enqueued by the scheduler (housekeeping): hidden from listings unless asked for, and
    # runs that did nothing are pruned after a short window.
    Column("system", Boolean, nullable=False, server_default=text("false")),
    Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
    Index("ix_jobs_status_created_at", "status", "created_at"),
    Index("ix_jobs_finished_at", "finished_at"),
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
    # Failed attempts (a run that is still going counts too); runs lost with their worker
    # (lease expired) are counted apart, against their own bound.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="5"),
    Column("lost_attempts", Integer, nullable=False, server_default="0"),
    Column("max_lost_attempts", Integer, nullable=False, server_default="5"),
    # Fencing token: incremented by every claim, never reused. Every write a run makes is
    # checked against it, so a run that lost its lease cannot change anything.
    Column("fence", BigInteger, nullable=False, server_default="0"),
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
    # W3C trace context of the enqueuing span (`traceparent[;tracestate]`): the run continues that trace.
    Column("trace_context", String(600)),
    # The handler said this run found nothing to do (TaskContext.mark_idle): retention forgets
    # such housekeeping runs after a short window.
    Column("idle", Boolean, nullable=False, server_default=text("false")),
    # NATS transport: the fence the task had when the kernel last published it as claimable.
    Column("dispatched_fence", BigInteger),
    Column("dispatched_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Index("ix_tasks_job_id_status", "job_id", "status"),
    # The claim scans queued tasks in priority order; running ones are scanned for expired leases.
    Index("ix_tasks_claim", "status", "priority", "run_after"),
    Index("ix_tasks_lease", "status", "lease_expires_at"),
)

# A task's runs that did not succeed (failed, retried, lost with their worker, cancelled,
# released): the history `jobs show` prints. A success is the task row itself, so the hot path
# writes nothing here.
task_attempts = Table(
    "task_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_id", BigId, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("fence", BigInteger, nullable=False),
    Column("worker", String(255)),
    Column("outcome", String(16), nullable=False),
    Column("error", Text),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime, nullable=False),
    Index("ix_task_attempts_task_id", "task_id"),
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
    Column("transport", String(16), nullable=False, server_default="database"),  # or "nats"
    Column("version", String(64)),
    Column("info", JsonDoc),  # cpu_count, gpu, ...
    Column("drain_requested", Boolean, nullable=False, server_default=text("false")),
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
