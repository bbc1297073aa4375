"""Tracing: a task carries the W3C trace context of the span that enqueued it, so the worker's
span continues the enqueuer's trace (`tasks.trace_context`, a `traceparent[;tracestate]` text).

Revision ID: opsdata0001_task_trace_context
Revises: 0002_engine
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "opsdata0001_task_trace_context"
down_revision = "0002_engine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trace_context", sa.String(length=600), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("trace_context")
