"""What the store hands out: items, reviews and leases as plain values, detached from any database session.

Regions are ``edge.findings.Region``, the type every layer shares; ``region_columns`` and ``region_of`` are the one
mapper each way between it and its table row (``RegionRow``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edge.findings import Region
from edge.station.tables import STATUS_PENDING, LeaseRow, RegionRow, ReviewItemRow, ReviewRow

_REGION_FIELDS = tuple(name for name, info in Region.model_fields.items() if not info.exclude)


def region_columns(region: Region) -> dict[str, Any]:
    """A region as the columns of its ``RegionRow`` (all but ``id`` and ``item_id``)."""
    return {name: getattr(region, name) for name in _REGION_FIELDS}


def region_of(row: RegionRow) -> Region:
    """The stored region as the shared type."""
    return Region(**{name: getattr(row, name) for name in _REGION_FIELDS})


@dataclass(frozen=True)
class LeaseView:
    item_id: int
    username: str
    claimed_wall: float
    expires_wall: float


@dataclass(frozen=True)
class ReviewView:
    id: int
    item_id: int
    decision: str
    final_verdict: str
    defect_class: str | None
    reviewer: str
    created_wall: float
    seconds_spent: float | None
    boxes: list[dict[str, Any]] | None = None  # the operator's [{x, y, w, h, class}]; None: the model's regions
    comment: str | None = None
    second_review: bool = False
    group_id: int | None = None  # answered with its look-alike group in one key press


@dataclass(frozen=True)
class ReferenceView:
    """A recently reviewed-good frame of a line, shown beside an item for comparison."""

    item_id: int
    frame_id: str
    reviewer: str
    reviewed_wall: float


@dataclass(frozen=True)
class ItemView:
    """A review item as the console and the API see it."""

    id: int
    frame_id: str
    line_id: str
    source_id: str
    seq: int
    captured_wall: float
    decided_wall: float
    received_wall: float
    width: int
    height: int
    verdict: str
    class_scores: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    uncertainty: float
    reason: str
    pack_version: str
    profile_version: str
    image_path: str
    status: str
    regions: list[Region] = field(default_factory=list)
    reviews: list[ReviewView] = field(default_factory=list)
    second_review_of: str | None = None  # waiting for a second review by anyone but this user
    heatmap_png: str | None = None  # base64 PNG (ReviewItem.heatmap_png); loaded by get_item only
    group_id: int | None = None  # the look-alike group it waits in (store.groups); None: alone

    @property
    def awaits_second_review(self) -> bool:
        return self.second_review_of is not None

    @property
    def asked_again(self) -> bool:
        """Reviewed, then sent back to the queue for another answer (`lineside train --recheck`), not a second
        review."""
        return self.status == STATUS_PENDING and bool(self.reviews) and not self.awaits_second_review

    @property
    def top_caption(self) -> str:
        """Caption of the strongest region ('' when the model found none)."""
        if not self.regions:
            return ""
        return max(self.regions, key=lambda r: r.peak).caption

    @property
    def latest_review(self) -> ReviewView | None:
        return self.reviews[-1] if self.reviews else None

    @property
    def classes(self) -> list[str]:
        """The labels a reviewer may choose: the keys of class_scores, in the order the model gave them."""
        return list(self.class_scores)


@dataclass(frozen=True)
class QueuePage:
    items: list[ItemView]
    next_cursor: str | None  # None on the last page
    total: int  # items matching the filter (leases of others not subtracted)
    group_sizes: dict[int, int] = field(default_factory=dict)  # waiting members of the groups on the page


def lease_view(row: LeaseRow) -> LeaseView:
    return LeaseView(item_id=row.item_id, username=row.username, claimed_wall=row.claimed_wall,
                     expires_wall=row.expires_wall)


def review_view(r: ReviewRow) -> ReviewView:
    return ReviewView(id=r.id, item_id=r.item_id, decision=r.decision, final_verdict=r.final_verdict,
                      defect_class=r.defect_class, reviewer=r.reviewer, created_wall=r.created_wall,
                      seconds_spent=r.seconds_spent, boxes=r.boxes, comment=r.comment,
                      second_review=bool(r.second_review), group_id=r.group_id)


def review_json(r: ReviewRow | None) -> dict[str, Any] | None:
    """A review as the audit log keeps it (its view without the item id)."""
    if r is None:
        return None
    data = dataclasses.asdict(review_view(r))
    del data["item_id"]
    return data


def item_view(row: ReviewItemRow, heatmap_png: str | None = None) -> ItemView:
    return ItemView(
        id=row.id, frame_id=row.frame_id, line_id=row.line_id, source_id=row.source_id, seq=row.seq,
        captured_wall=row.captured_wall, decided_wall=row.decided_wall, received_wall=row.received_wall,
        width=row.width, height=row.height, verdict=row.verdict,
        class_scores={str(k): float(v) for k, v in row.class_scores.items()},
        anomaly_score=row.anomaly_score, anomaly_threshold=row.anomaly_threshold, uncertainty=row.uncertainty,
        reason=row.reason, pack_version=row.pack_version, profile_version=row.profile_version,
        image_path=row.image_path, status=row.status,
        regions=[region_of(r) for r in row.regions], reviews=[review_view(r) for r in row.reviews],
        second_review_of=row.second_review_of, heatmap_png=heatmap_png, group_id=row.group_id)
