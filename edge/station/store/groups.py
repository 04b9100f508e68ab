"""The groups role of the store: waiting items that look alike, grouped as they arrive, so one answer settles many.

A line routes frames faster than a person answers them one by one, and much of what waits looks alike: the same
lighting change, the same harmless texture, the same real defect on a run of parts. Each item arrives with the
frame's global embedding (``ReviewItem.embedding``); ``Grouper.assign`` puts it, inside the ingest transaction,
into a group of its line and model verdict:

- Online threshold ("leader") clustering with running-mean centres: the item joins the nearest *open* group whose
  centre lies within ``GroupingPolicy.distance`` (cosine distance, 1 − cos) of its unit embedding, else it starts a
  group of its own. A group is open while it has a waiting member, has fewer than ``max_items`` members and was
  last joined within ``window_s``; its centre is the sum of its members' unit embeddings (stored, so a restarted
  station goes on where it was).
- Why not a library: the clustering's state must live in the database (groups survive a restart and are shared by
  the console), one assignment is a dot product with the few open centres of one line and verdict (microseconds in
  numpy), and its one knob — a distance — is what an operator can reason about. River's DBSTREAM or
  scikit-learn's Birch keep their micro-clusters in process memory and bring a large dependency to the station for
  the same nearest-centre step; an ANN index (faiss, hnswlib) pays off only for many thousands of open centres.
- What groups do not change: every item keeps its own review row and audit entry, its own lease (a group's
  leases are its members' leases) and its own place in the training export.

The open centres of each line and verdict are kept in memory between arrivals (loaded from the database at first
use); after a failed transaction they are dropped and reloaded, so memory never holds a group the database lacks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from edge.station.store.filters import QueueFilter
from edge.station.tables import STATUS_PENDING, ItemGroupRow, ReviewItemRow


@dataclass(frozen=True)
class GroupingPolicy:
    """When arriving items are grouped: ``distance`` 0 switches grouping off."""

    distance: float = 0.15  # cosine distance to a group's centre (the starter pack: see StationConfig)
    max_items: int = 24  # members at most: what one grid shows at a glance
    window_s: float = 3600.0  # a group is joined only this long after its last arrival

    @property
    def enabled(self) -> bool:
        return self.distance > 0 and self.max_items > 1


@dataclass
class _Open:
    """The open groups of one line and verdict: ids, centre sums (rows), member counts, last arrivals."""

    ids: list[int] = field(default_factory=list)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    counts: list[int] = field(default_factory=list)
    last: list[float] = field(default_factory=list)

    def add(self, group_id: int, vector: np.ndarray, count: int, last: float) -> None:
        row = vector[None].astype(np.float32)
        self.sums = row if not self.ids else np.vstack([self.sums, row])
        self.ids.append(group_id)
        self.counts.append(count)
        self.last.append(last)

    def drop(self, index: int) -> None:
        self.sums = np.delete(self.sums, index, axis=0)
        for values in (self.ids, self.counts, self.last):
            del values[index]


def group_sizes(s: Session, group_ids: Collection[int]) -> dict[int, int]:
    """Waiting members of each group."""
    if not group_ids:
        return {}
    query = (select(ReviewItemRow.group_id, func.count()).where(ReviewItemRow.group_id.in_(list(group_ids)),
                                                                 ReviewItemRow.status == STATUS_PENDING)
             .group_by(ReviewItemRow.group_id))
    return {int(g): int(n) for g, n in s.execute(query) if g is not None}


def group_head(flt: QueueFilter) -> Any:
    """Items that stand for their look-alike group in the waiting queue: ungrouped ones, and of each group the
    member first in the queue's order among those the filter shows (``ix_review_items_group`` answers it)."""
    other = aliased(ReviewItemRow)
    if flt.sort == "uncertainty":
        first = or_(other.uncertainty > ReviewItemRow.uncertainty,
                    and_(other.uncertainty == ReviewItemRow.uncertainty, other.id < ReviewItemRow.id))
    else:
        first = or_(other.captured_wall < ReviewItemRow.captured_wall,
                    and_(other.captured_wall == ReviewItemRow.captured_wall, other.id < ReviewItemRow.id))
    return or_(ReviewItemRow.group_id.is_(None),
               ~exists().where(other.group_id == ReviewItemRow.group_id, other.status == STATUS_PENDING,
                               first, *flt.conditions(other)))


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Grouper:
    """Assigns arriving items to look-alike groups (see the module docstring); one per Store, thread-safe."""

    def __init__(self, policy: GroupingPolicy | None = None) -> None:
        self.policy = policy or GroupingPolicy()
        self._open: dict[tuple[str, str], _Open] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop what memory holds (after a failed transaction): the next arrival reloads from the database."""
        with self._lock:
            self._open.clear()

    def _load(self, s: Session, line_id: str, verdict: str, now: float) -> _Open:
        p = self.policy
        waiting = exists().where(ReviewItemRow.group_id == ItemGroupRow.id, ReviewItemRow.status == STATUS_PENDING)
        rows = s.execute(select(ItemGroupRow.id, ItemGroupRow.centroid, ItemGroupRow.members, ItemGroupRow.last_wall)
                         .where(ItemGroupRow.line_id == line_id, ItemGroupRow.verdict == verdict,
                                ItemGroupRow.last_wall >= now - p.window_s, ItemGroupRow.members < p.max_items,
                                waiting)
                         .order_by(ItemGroupRow.id))
        found = _Open()
        for group_id, centroid, members, last in rows:
            found.add(group_id, np.frombuffer(centroid, np.float32), members, last)
        return found

    def assign(self, s: Session, line_id: str, verdict: str, vectors: Sequence[np.ndarray | None],
               now: float | None = None) -> list[int | None]:
        """Inside the ingest's write transaction: the group of each arriving item of one line and verdict (None for
        an item without an embedding, or with grouping off). New groups are added and joined ones updated in ``s``;
        items earlier in ``vectors`` are there for later ones to join."""
        if not self.policy.enabled:
            return [None] * len(vectors)
        now = time.time() if now is None else now
        p = self.policy
        out: list[int | None] = []
        with self._lock:
            key = (line_id, verdict)
            groups = self._open.get(key)
            if groups is None:
                groups = self._open[key] = self._load(s, line_id, verdict, now)
            fresh: set[int] = set()  # joined or made in this transaction: certainly open
            for vector in vectors:
                if vector is None:
                    out.append(None)
                    continue
                x = unit(vector)
                chosen = self._nearest(s, groups, x, now, fresh)
                if chosen is None:
                    row = ItemGroupRow(line_id=line_id, verdict=verdict, centroid=x.tobytes(), members=1,
                                       created_wall=now, last_wall=now)
                    s.add(row)
                    s.flush()
                    groups.add(row.id, x, 1, now)
                    fresh.add(row.id)
                    out.append(row.id)
                    continue
                groups.sums[chosen] += x
                groups.counts[chosen] += 1
                groups.last[chosen] = now
                group_id = groups.ids[chosen]
                joined = s.get(ItemGroupRow, group_id)
                if joined is not None:
                    joined.centroid, joined.members = groups.sums[chosen].tobytes(), groups.counts[chosen]
                    joined.last_wall = now
                fresh.add(group_id)
                out.append(group_id)
                if groups.counts[chosen] >= p.max_items:
                    groups.drop(chosen)  # full: the next look-alike starts a group of its own
        return out

    def _nearest(self, s: Session, groups: _Open, x: np.ndarray, now: float, fresh: set[int]) -> int | None:
        """Index of the open group to join, None to start one. A group no longer waiting (all answered) or past its
        window is dropped from memory on the way."""
        p = self.policy
        while groups.ids:
            if groups.sums.shape[1] != x.shape[0]:  # another pack's embeddings: never the same group
                return None
            norms = np.maximum(np.linalg.norm(groups.sums, axis=1), 1e-12)
            distance = 1.0 - (groups.sums @ x) / norms
            best = int(np.argmin(distance))
            if distance[best] > p.distance:
                return None
            group_id = groups.ids[best]
            if group_id in fresh:
                return best
            still = (groups.last[best] >= now - p.window_s and s.scalar(
                select(ReviewItemRow.id).where(ReviewItemRow.group_id == group_id,
                                               ReviewItemRow.status == STATUS_PENDING).limit(1)) is not None)
            if still:
                return best
            groups.drop(best)
        return None
