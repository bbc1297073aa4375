"""Segment-parallel encode: a table of the pieces each asset is encoded in, and one asset per
profile of a job (a multi-profile job encodes every profile).

Revision ID: segments0001_segment_encode
Revises: e0001_encode
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "segments0001_segment_encode"
down_revision = "e0001_encode"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_constraint("uq_assets_job_id", type_="unique")
        batch_op.create_unique_constraint("uq_assets_job_id_profile_name", ["job_id", "profile_name"])
    op.create_table(
        "encode_segments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("asset_id", BigId, nullable=False),
        sa.Column("rung", sa.String(length=32), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_seconds", sa.Float(), nullable=False),
        sa.Column("end_seconds", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("encode_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_encode_segments_asset_id_assets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encode_segments")),
        sa.UniqueConstraint("asset_id", "rung", "idx", name=op.f("uq_encode_segments_asset_id_rung_idx")),
    )


def downgrade() -> None:
    op.drop_table("encode_segments")
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_constraint("uq_assets_job_id_profile_name", type_="unique")
        batch_op.create_unique_constraint("uq_assets_job_id", ["job_id"])
