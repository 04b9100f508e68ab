"""The station's tables, as SQLAlchemy 2 typed declarative models.

Portable SQL only (no SQLite-specific types), so the same models run on SQLite today and on PostgreSQL by
changing the database URL. Times are epoch seconds (float), as on the wire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUS_PENDING = "pending"
STATUS_REVIEWED = "reviewed"
DECISIONS = ("accept", "reject", "relabel")
ROLES = ("reviewer", "admin")


class Base(DeclarativeBase):
    pass


class ReviewItemRow(Base):
    """One frame routed to review; written once per frame_id, however often it arrives."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[str] = mapped_column(String(200), unique=True)
    line_id: Mapped[str] = mapped_column(String(100), index=True)
    source_id: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(Integer)
    captured_wall: Mapped[float] = mapped_column(Float)
    decided_wall: Mapped[float] = mapped_column(Float)
    received_wall: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(100))
    class_scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    anomaly_score: Mapped[float] = mapped_column(Float)
    anomaly_threshold: Mapped[float] = mapped_column(Float)
    uncertainty: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(32))
    pack_version: Mapped[str] = mapped_column(String(100))
    profile_version: Mapped[str] = mapped_column(String(100))
    image_path: Mapped[str] = mapped_column(String(400), doc="relative to the station's storage_dir")
    status: Mapped[str] = mapped_column(String(16), default=STATUS_PENDING)

    regions: Mapped[list[RegionRow]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="RegionRow.id")
    reviews: Mapped[list[ReviewRow]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="ReviewRow.id")

    __table_args__ = (
        CheckConstraint(f"status IN ('{STATUS_PENDING}', '{STATUS_REVIEWED}')",
                        name="ck_review_items_status"),
    )


# The review queue: pending first, most uncertain first, oldest first among equals.
Index("ix_review_items_queue", ReviewItemRow.status, ReviewItemRow.uncertainty.desc(), ReviewItemRow.id)
# The queue sorted by age (oldest capture first); both indexes serve keyset pagination (see edge.station.queue).
Index("ix_review_items_age", ReviewItemRow.status, ReviewItemRow.captured_wall, ReviewItemRow.id)


class RegionRow(Base):
    """A defect region of an item, in frame pixel coordinates, with its caption."""

    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    area_px: Mapped[int] = mapped_column(Integer)
    area_pct: Mapped[float] = mapped_column(Float)
    peak: Mapped[float] = mapped_column(Float)
    defect_class: Mapped[str] = mapped_column(String(100))
    location: Mapped[str] = mapped_column(String(32))
    caption: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    caption_score: Mapped[float] = mapped_column(Float)

    item: Mapped[ReviewItemRow] = relationship(back_populates="regions")


class ReviewRow(Base):
    """A person's answer about an item. An item reviewed twice keeps both rows; the latest one wins."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    final_verdict: Mapped[str] = mapped_column(String(100), doc="'good' or the defect class")
    defect_class: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reviewer: Mapped[str] = mapped_column(String(100))
    created_wall: Mapped[float] = mapped_column(Float)
    seconds_spent: Mapped[float | None] = mapped_column(Float, nullable=True)

    item: Mapped[ReviewItemRow] = relationship(back_populates="reviews")

    __table_args__ = (
        CheckConstraint("decision IN ('accept', 'reject', 'relabel')", name="ck_reviews_decision"),
    )


class UserRow(Base):
    """A person who may log in to the console. Disabled users keep their rows (audit and reviews name them)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300), doc="scrypt$n$r$p$salt$hash (see edge.station.users)")
    role: Mapped[str] = mapped_column(String(16))
    created_wall: Mapped[float] = mapped_column(Float)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        CheckConstraint("role IN ('reviewer', 'admin')", name="ck_users_role"),
    )


class LeaseRow(Base):
    """Who is reviewing an item right now. One row per item at most (the primary key), so two reviewers can never
    both hold it; a row whose ``expires_wall`` has passed is free for anyone to take over."""

    __tablename__ = "leases"

    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    claimed_wall: Mapped[float] = mapped_column(Float, doc="when this holder opened the item (time spent starts)")
    expires_wall: Mapped[float] = mapped_column(Float, index=True)


class AuditRow(Base):
    """One change made through the console: who, when, what it looked like before and after, time on the item."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_wall: Mapped[float] = mapped_column(Float, index=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(32), doc="login, login_failed, logout, lease, review, undo, ...")
    item_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True,
                                                doc="no foreign key: the log outlives what it describes")
    before: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    after: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    seconds_spent: Mapped[float | None] = mapped_column(Float, nullable=True)
