"""Job engine: fencing tokens, lost runs counted apart, run history, system jobs, retention.

Revision ID: 0002_engine
Revises: 0001_core
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_engine"
down_revision = "0001_core"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("lost_attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("max_lost_attempts", sa.Integer(), server_default="5", nullable=False))
        batch.add_column(sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("idle", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("system", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_table(
        "task_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("task_id", BIG_ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_attempts_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_attempts")),
    )
    op.create_index("ix_task_attempts_task_id", "task_attempts", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_attempts_task_id", table_name="task_attempts")
    op.drop_table("task_attempts")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("system")
    with op.batch_alter_table("tasks") as batch:
        for column in ("idle", "fence", "max_lost_attempts", "lost_attempts"):
            batch.drop_column(column)
