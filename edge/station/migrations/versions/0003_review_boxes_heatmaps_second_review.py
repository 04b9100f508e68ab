"""Console review work: operator boxes and comments on reviews, second reviews, anomaly heatmaps, stats indexes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Only additions: nullable columns (or with a server default), a new table and indexes, so existing rows stay as they
are and SQLite needs no table copy (ALTER TABLE ADD COLUMN). As in 0002, each step is skipped when what it adds is
there already (a database made by ``create_all`` from these models and adopted at 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str | None]:
    return {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    if "second_review_of" not in _columns("review_items"):
        op.add_column("review_items", sa.Column("second_review_of", sa.String(length=100), nullable=True))
    have = _columns("reviews")
    if "boxes" not in have:
        op.add_column("reviews", sa.Column("boxes", sa.JSON(), nullable=True))
    if "comment" not in have:
        op.add_column("reviews", sa.Column("comment", sa.Text(), nullable=True))
    if "second_review" not in have:
        op.add_column("reviews", sa.Column("second_review", sa.Boolean(), server_default=sa.false(), nullable=False))
    indexes = _indexes("reviews")
    if "ix_reviews_created_wall" not in indexes:
        op.create_index("ix_reviews_created_wall", "reviews", ["created_wall", "reviewer", "seconds_spent", "item_id",
                                                           "final_verdict", "second_review"], unique=False)
    if "ix_reviews_final_verdict" not in indexes:
        op.create_index("ix_reviews_final_verdict", "reviews", ["final_verdict", "id"], unique=False)
    if sa.inspect(op.get_bind()).has_table("heatmaps"):
        return
    op.create_table(
        "heatmaps",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("png", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id"),
    )


def downgrade() -> None:
    op.drop_table("heatmaps")
    op.drop_index("ix_reviews_final_verdict", table_name="reviews")
    op.drop_index("ix_reviews_created_wall", table_name="reviews")
    with op.batch_alter_table("reviews") as batch:  # SQLite before 3.35 cannot DROP COLUMN: batch copies the table
        batch.drop_column("second_review")
        batch.drop_column("comment")
        batch.drop_column("boxes")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("second_review_of")
