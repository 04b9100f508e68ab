"""Per-minute decision summaries from the edges (every decision counted, auto and routed).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Only a new table and its index, skipped when it is there already (a database made by ``create_all`` from these
models and adopted at 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("decision_summaries"):
        return
    op.create_table(
        "decision_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("summary_id", sa.String(length=200), nullable=False),
        sa.Column("line_id", sa.String(length=100), nullable=False),
        sa.Column("boot", sa.String(length=40), nullable=False),
        sa.Column("minute_wall", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("auto", sa.JSON(), nullable=False),
        sa.Column("routed", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("first_frame_id", sa.String(length=200), nullable=True),
        sa.Column("last_frame_id", sa.String(length=200), nullable=True),
        sa.Column("received_wall", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("summary_id"),
    )
    op.create_index("ix_decision_summaries_line_minute", "decision_summaries", ["line_id", "minute_wall"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_decision_summaries_line_minute", table_name="decision_summaries")
    op.drop_table("decision_summaries")
