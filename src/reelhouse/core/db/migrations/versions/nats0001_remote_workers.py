"""Remote workers over NATS: what the kernel announced on the work stream, and the worker
registry's extra fields (transport, version, hardware, drain requests).

Revision ID: nats0001_remote_workers
Revises: 0002_engine
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "nats0001_remote_workers"
down_revision = "0002_engine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        # The fence the task had when the kernel last published it as claimable (NULL: never).
        batch_op.add_column(sa.Column("dispatched_fence", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transport", sa.String(length=16), nullable=False, server_default="database"))
        batch_op.add_column(sa.Column("version", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "info", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
            )
        )
        batch_op.add_column(sa.Column("drain_requested", sa.Boolean(), nullable=False, server_default=sa.text("false")))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        for column in ("drain_requested", "info", "version", "transport"):
            batch_op.drop_column(column)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("dispatched_fence")
