"""Security: login sessions are told apart from API tokens (`api_tokens.kind`), so they can expire
on a sliding window; tokens are looked up by user for revoke-all.

Revision ID: s0001_security
Revises: 0001_core
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "s0001_security"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="api"))
        batch_op.create_index("ix_api_tokens_user_id", ["user_id"])
    # Tokens minted by /auth/login before this revision were named "login" and never expired:
    # they become sessions, which the sliding expiry then applies to.
    op.execute("UPDATE api_tokens SET kind = 'login' WHERE name = 'login'")


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_api_tokens_user_id")
        batch_op.drop_column("kind")
