"""Look-alike groups: the items' global embeddings, the groups they join on arrival, and group answers on reviews.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

New nullable columns and new tables only: every existing item stays a single item (no group), every existing review
an answer given alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _has(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str | None]:
    return {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    # each step skipped when it is there already (a database made by create_all and adopted at 0001)
    if not _has("item_groups"):
        op.create_table(
            "item_groups",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("line_id", sa.String(length=100), nullable=False),
            sa.Column("verdict", sa.String(length=100), nullable=False),
            sa.Column("centroid", sa.LargeBinary(), nullable=False),
            sa.Column("members", sa.Integer(), nullable=False),
            sa.Column("created_wall", sa.Float(), nullable=False),
            sa.Column("last_wall", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_item_groups_line_verdict", "item_groups", ["line_id", "verdict", "last_wall"],
                        unique=False)
    if not _has("embeddings"):
        op.create_table(
            "embeddings",
            sa.Column("item_id", sa.Integer(), nullable=False),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("item_id"),
        )
    if "group_id" not in _columns("review_items"):
        op.add_column("review_items", sa.Column("group_id", sa.Integer(), nullable=True))
    if "ix_review_items_group" not in _indexes("review_items"):
        op.create_index("ix_review_items_group", "review_items",
                        ["group_id", "status", sa.literal_column("uncertainty DESC"), "id"], unique=False)
    if "group_id" not in _columns("reviews"):
        op.add_column("reviews", sa.Column("group_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("group_id")
    op.drop_index("ix_review_items_group", table_name="review_items")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("group_id")
    op.drop_table("embeddings")
    op.drop_index("ix_item_groups_line_verdict", table_name="item_groups")
    op.drop_table("item_groups")
