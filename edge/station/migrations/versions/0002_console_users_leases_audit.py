"""Console: users, review leases, audit log, and the queue-by-age index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Databases made by ``create_all`` while the console work was in progress may already hold some of these; each step
is skipped when its table or index exists, so such a database is adopted without a manual fix.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def _has_index(table: str, name: str) -> bool:
    return any(ix["name"] == name for ix in sa.inspect(op.get_bind()).get_indexes(table))


def upgrade() -> None:
    if not _has_table("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("at_wall", sa.Float(), nullable=False),
            sa.Column("username", sa.String(length=100), nullable=False),
            sa.Column("action", sa.String(length=32), nullable=False),
            sa.Column("item_id", sa.Integer(), nullable=True),
            sa.Column("before", sa.JSON(), nullable=True),
            sa.Column("after", sa.JSON(), nullable=True),
            sa.Column("seconds_spent", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_log_at_wall", "audit_log", ["at_wall"], unique=False)
        op.create_index("ix_audit_log_item_id", "audit_log", ["item_id"], unique=False)
        op.create_index("ix_audit_log_username", "audit_log", ["username"], unique=False)
    if not _has_table("users"):
        op.create_table(
            "users",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("username", sa.String(length=100), nullable=False),
            sa.Column("password_hash", sa.String(length=300), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("created_wall", sa.Float(), nullable=False),
            sa.Column("disabled", sa.Boolean(), nullable=False),
            sa.CheckConstraint("role IN ('reviewer', 'admin')", name="ck_users_role"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("username"),
        )
    if not _has_table("leases"):
        op.create_table(
            "leases",
            sa.Column("item_id", sa.Integer(), nullable=False),
            sa.Column("username", sa.String(length=100), nullable=False),
            sa.Column("claimed_wall", sa.Float(), nullable=False),
            sa.Column("expires_wall", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("item_id"),
        )
        op.create_index("ix_leases_expires_wall", "leases", ["expires_wall"], unique=False)
    if not _has_index("review_items", "ix_review_items_age"):
        op.create_index("ix_review_items_age", "review_items", ["status", "captured_wall", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_review_items_age", table_name="review_items")
    op.drop_index("ix_leases_expires_wall", table_name="leases")
    op.drop_table("leases")
    op.drop_table("users")
    op.drop_index("ix_audit_log_username", table_name="audit_log")
    op.drop_index("ix_audit_log_item_id", table_name="audit_log")
    op.drop_index("ix_audit_log_at_wall", table_name="audit_log")
    op.drop_table("audit_log")
