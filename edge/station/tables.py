"""The station's tables, as SQLAlchemy 2 typed declarative models.

Portable SQL only (no SQLite-specific types), so the same models run on SQLite today and on PostgreSQL by
changing the database URL. Times are epoch seconds (float), as on the wire. A column declared by its annotation
alone (``x: Mapped[int]``) has the type ``Base`` maps it to: Integer, Float, Boolean; NULL only when it says ``| None``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUS_PENDING = "pending"
STATUS_REVIEWED = "reviewed"
DECISIONS = ("accept", "reject", "relabel")
ROLES = ("reviewer", "admin")


class Base(DeclarativeBase):
    type_annotation_map = {int: Integer, float: Float, bool: Boolean}  # the column types of the first schema


class ReviewItemRow(Base):
    """One frame routed to review; written once per frame_id, however often it arrives."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    frame_id: Mapped[str] = mapped_column(String(200), unique=True)
    line_id: Mapped[str] = mapped_column(String(100), index=True)
    source_id: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int]
    captured_wall: Mapped[float]
    decided_wall: Mapped[float]
    received_wall: Mapped[float] = mapped_column(doc="when the station stored it, by the station's clock")
    width: Mapped[int]
    height: Mapped[int]
    verdict: Mapped[str] = mapped_column(String(100))
    class_scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    anomaly_score: Mapped[float]
    anomaly_threshold: Mapped[float]
    uncertainty: Mapped[float]
    reason: Mapped[str] = mapped_column(String(32))
    pack_version: Mapped[str] = mapped_column(String(100))
    profile_version: Mapped[str] = mapped_column(String(100))
    image_path: Mapped[str] = mapped_column(String(400), doc="relative to the station's storage_dir")
    status: Mapped[str] = mapped_column(String(16), default=STATUS_PENDING)
    second_review_of: Mapped[str | None] = mapped_column(
        String(100), nullable=True, doc="set while the item waits for a second review: its first reviewer, who may "
        "not take it; the item is pending meanwhile (see edge.station.store.reviews)")
    group_id: Mapped[int | None] = mapped_column(
        nullable=True, doc="the look-alike group (ItemGroupRow) it joined on arrival; None: reviewed alone (no "
        "embedding sent, or taken out of its group). No foreign key: a group is bookkeeping of the queue")

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
# A group's waiting members, most uncertain first (its head on the queue page, its grid on the group page).
Index("ix_review_items_group", ReviewItemRow.group_id, ReviewItemRow.status, ReviewItemRow.uncertainty.desc(),
      ReviewItemRow.id)


class ItemGroupRow(Base):
    """Items of one line and one model verdict whose global embeddings lie close together, grouped as they arrive
    (edge.station.store.groups), so that one answer can settle all of them."""

    __tablename__ = "item_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[str] = mapped_column(String(100))
    verdict: Mapped[str] = mapped_column(String(100))
    centroid: Mapped[bytes] = mapped_column(
        LargeBinary, doc="the sum of the members' unit embeddings, float32: its direction is the group's centre")
    members: Mapped[int] = mapped_column(doc="items that ever joined (taken-out ones included)")
    created_wall: Mapped[float]
    last_wall: Mapped[float] = mapped_column(doc="when an item last joined")


# The groups an arriving item may join: one line and verdict, recently joined.
Index("ix_item_groups_line_verdict", ItemGroupRow.line_id, ItemGroupRow.verdict, ItemGroupRow.last_wall)


class ItemPart:
    """A large part of one item in a table of its own, read by the item's id alone: scans of the items (counts,
    stats) need not read it."""

    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True)


class EmbeddingRow(ItemPart, Base):
    """The global embedding an item arrived with (ReviewItem.embedding), as float16 bytes."""

    __tablename__ = "embeddings"

    vector: Mapped[bytes] = mapped_column(LargeBinary)


class RegionRow(Base):
    """A defect region of an item, in frame pixel coordinates, with its caption."""

    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    x: Mapped[int]
    y: Mapped[int]
    w: Mapped[int]
    h: Mapped[int]
    area_px: Mapped[int]
    area_pct: Mapped[float]
    peak: Mapped[float]
    defect_class: Mapped[str] = mapped_column(String(100))
    location: Mapped[str] = mapped_column(String(32))
    caption: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    caption_score: Mapped[float]

    item: Mapped[ReviewItemRow] = relationship(back_populates="regions")


class ReviewRow(Base):
    """A person's answer about an item. An item reviewed twice keeps both rows; the latest one wins."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    final_verdict: Mapped[str] = mapped_column(String(100), doc="'good' or the defect class")
    defect_class: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reviewer: Mapped[str] = mapped_column(String(100))
    created_wall: Mapped[float]
    seconds_spent: Mapped[float | None]
    boxes: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSON, nullable=True, doc="the operator's boxes [{x, y, w, h, class}] in frame pixels when they edited them; "
        "None: the model's regions stand")
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    second_review: Mapped[bool] = mapped_column(default=False, server_default=false(),
                                                 doc="the second, independent review of a sampled item")
    group_id: Mapped[int | None] = mapped_column(
        nullable=True, doc="the look-alike group answered with this one key press; None: answered alone")

    item: Mapped[ReviewItemRow] = relationship(back_populates="reviews")

    __table_args__ = (
        CheckConstraint("decision IN ('accept', 'reject', 'relabel')", name="ck_reviews_decision"),
    )


# The stats page's window ("reviews of the last 24 h"): covering, so its queries read the window's index range in
# order instead of seeking every review row (edge.station.stats); and the good references of a line (latest good
# answers first).
Index("ix_reviews_created_wall", ReviewRow.created_wall, ReviewRow.reviewer, ReviewRow.seconds_spent,
      ReviewRow.item_id, ReviewRow.final_verdict, ReviewRow.second_review)
Index("ix_reviews_final_verdict", ReviewRow.final_verdict, ReviewRow.id)


class HeatmapRow(ItemPart, Base):
    """The anomaly map of an item as the edge sent it (base64 PNG, see ReviewItem.heatmap_png): at 1–6 KB a map
    would make every scan of the items read several times more pages; here it is read for one item page at a time."""

    __tablename__ = "heatmaps"

    png: Mapped[str] = mapped_column(Text)


class UserRow(Base):
    """A person who may log in to the console. Disabled users keep their rows (audit and reviews name them)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300), doc="scrypt$n$r$p$salt$hash (see edge.station.users)")
    role: Mapped[str] = mapped_column(String(16))
    created_wall: Mapped[float]
    disabled: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        CheckConstraint("role IN ('reviewer', 'admin')", name="ck_users_role"),
    )


class LeaseRow(Base):
    """Who is reviewing an item right now. One row per item at most (the primary key), so two reviewers can never
    both hold it; a row whose ``expires_wall`` has passed is free for anyone to take over."""

    __tablename__ = "leases"

    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    claimed_wall: Mapped[float] = mapped_column(doc="when this holder opened the item (time spent starts)")
    expires_wall: Mapped[float] = mapped_column(index=True)


class AuditRow(Base):
    """One change made through the console: who, when, what it looked like before and after, time on the item."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at_wall: Mapped[float] = mapped_column(index=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(32), doc="login, login_failed, logout, lease, review, undo, ...")
    item_id: Mapped[int | None] = mapped_column(index=True, doc="no foreign key: the log outlives what it describes")
    before: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    after: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    seconds_spent: Mapped[float | None]


class DecisionSummaryRow(Base):
    """One minute of one daemon run's decisions, auto and routed (edge.transport.summary); stored once per
    summary_id. Defect rates per hour or shift add these up (edge.station.summaries)."""

    __tablename__ = "decision_summaries"

    id: Mapped[int] = mapped_column(primary_key=True)
    summary_id: Mapped[str] = mapped_column(String(200), unique=True)
    line_id: Mapped[str] = mapped_column(String(100))
    boot: Mapped[str] = mapped_column(String(40))
    minute_wall: Mapped[float] = mapped_column(doc="epoch seconds of the minute's start (capture time)")
    frames: Mapped[int]
    auto: Mapped[dict[str, Any]] = mapped_column(JSON, doc="verdict → frames decided by the edge")
    routed: Mapped[dict[str, Any]] = mapped_column(JSON, doc="verdict → frames routed to review")
    reasons: Mapped[dict[str, Any]] = mapped_column(JSON, doc="routing reason → frames")
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, doc="'<pack> <profile>' → frames")
    first_frame_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_frame_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    received_wall: Mapped[float]


# /api/summaries: one line's minutes in a time range
Index("ix_decision_summaries_line_minute", DecisionSummaryRow.line_id, DecisionSummaryRow.minute_wall)
