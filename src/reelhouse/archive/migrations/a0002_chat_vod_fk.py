"""chat_messages.vod_id no longer a foreign key to vods.

The per-row referential check made a COPY of chat cost about 40 % more database CPU (bench/chat.py,
docs/BENCHMARKS.md), and chat is the one table written tens of thousands of rows a second. The
recorder creates the vods row before it records under it (`ensure_vod`), and the only code that
deletes vods rows (chat reconciliation) moves their chat in the same transaction.

Revision ID: a0002_chat_vod_fk
Revises: a0001_archive
Create Date: 2026-11-22
"""

from alembic import op

revision = "a0002_chat_vod_fk"
down_revision = "a0001_archive"
branch_labels = None
depends_on = None

_FK = "fk_chat_messages_vod_id_vods"


def upgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.create_foreign_key(_FK, "vods", ["vod_id"], ["twitch_vod_id"], onupdate="CASCADE", ondelete="CASCADE")
