"""First schema: review items, their regions, people's reviews (as of the station's first release).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.String(length=200), nullable=False),
        sa.Column("line_id", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("captured_wall", sa.Float(), nullable=False),
        sa.Column("decided_wall", sa.Float(), nullable=False),
        sa.Column("received_wall", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=100), nullable=False),
        sa.Column("class_scores", sa.JSON(), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("anomaly_threshold", sa.Float(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("pack_version", sa.String(length=100), nullable=False),
        sa.Column("profile_version", sa.String(length=100), nullable=False),
        sa.Column("image_path", sa.String(length=400), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'reviewed')", name="ck_review_items_status"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("frame_id"),
    )
    op.create_index("ix_review_items_line_id", "review_items", ["line_id"], unique=False)
    op.create_index("ix_review_items_queue", "review_items",
                    ["status", sa.literal_column("uncertainty DESC"), "id"], unique=False)

    op.create_table(
        "regions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("area_px", sa.Integer(), nullable=False),
        sa.Column("area_pct", sa.Float(), nullable=False),
        sa.Column("peak", sa.Float(), nullable=False),
        sa.Column("defect_class", sa.String(length=100), nullable=False),
        sa.Column("location", sa.String(length=32), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("caption_score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_regions_item_id", "regions", ["item_id"], unique=False)

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("final_verdict", sa.String(length=100), nullable=False),
        sa.Column("defect_class", sa.String(length=100), nullable=True),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column("created_wall", sa.Float(), nullable=False),
        sa.Column("seconds_spent", sa.Float(), nullable=True),
        sa.CheckConstraint("decision IN ('accept', 'reject', 'relabel')", name="ck_reviews_decision"),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_item_id", "reviews", ["item_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reviews_item_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_regions_item_id", table_name="regions")
    op.drop_table("regions")
    op.drop_index("ix_review_items_queue", table_name="review_items")
    op.drop_index("ix_review_items_line_id", table_name="review_items")
    op.drop_table("review_items")
