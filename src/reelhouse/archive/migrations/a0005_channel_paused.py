"""A channel can be paused: kept and shown, but neither discovered nor its chat recorded.

`enabled` is "watched at all" (false for a removed env channel); `paused` is an operator's
temporary stop that keeps the channel in the list with its state.

Revision ID: a0005_channel_paused
Revises: a0004_vods_sort_index
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "a0005_channel_paused"
down_revision = "a0004_vods_sort_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.text("false")))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("paused")
