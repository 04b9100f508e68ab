"""Look-alike groups as the console works with them: a group's waiting members, their leases, taking one out.

A group's lease is its members' leases: opening a group leases every waiting member nobody else holds, in one
transaction, one ``leases`` row per item as for a single item, so two reviewers can never hold the same frame —
a member someone else opened alone stays theirs and out of this reviewer's grid. Taking a frame out makes it a
single item again (``group_id`` None) and keeps it leased to the one who took it out, who answers it next.
Answers are ``Reviews.answer_group`` (store.reviews).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from edge.station.store.db import Database
from edge.station.store.queue import ItemNotFound, LeaseConflict, take_lease
from edge.station.store.records import ItemView, item_view
from edge.station.tables import STATUS_PENDING, ItemGroupRow, LeaseRow, ReviewItemRow

MAX_MEMBERS_SHOWN = 200


@dataclass(frozen=True)
class GroupView:
    """A group and its waiting members, most uncertain first; ``mine``: the members leased to the reviewer."""

    id: int
    line_id: str
    verdict: str
    members: list[ItemView]
    mine: frozenset[int]
    held_by_others: int  # waiting members someone else is reviewing (not in ``members``)

    @property
    def size(self) -> int:
        return len(self.members)


def _members_query(group_id: int) -> object:
    return (select(ReviewItemRow).where(ReviewItemRow.group_id == group_id, ReviewItemRow.status == STATUS_PENDING)
            .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id).limit(MAX_MEMBERS_SHOWN))


class GroupQueue:
    """Open, lease, renew, release and split look-alike groups for the console."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, group_id: int, username: str, minutes: float, now: float | None = None) -> GroupView:
        """Lease every waiting member of the group that nobody else holds (renewing mine) and return the group
        as this reviewer sees it. ItemNotFound: no such group, or nothing of it waits any more; LeaseConflict:
        every waiting member is someone else's."""
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            group = s.get(ItemGroupRow, group_id)
            if group is None:
                raise ItemNotFound(f"no look-alike group {group_id}")
            rows = list(s.scalars(_members_query(group_id).options(  # type: ignore[attr-defined]
                selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))))
            if not rows:
                raise ItemNotFound(f"nothing of group {group_id} waits for review any more")
            leases = {lease.item_id: lease for lease in s.scalars(
                select(LeaseRow).where(LeaseRow.item_id.in_([r.id for r in rows])))}
            mine: set[int] = set()
            others = 0
            shown = []
            for row in rows:
                lease = leases.get(row.id)
                if (lease is not None and lease.username != username and lease.expires_wall > now) \
                        or row.second_review_of == username:
                    others += 1
                    continue
                take_lease(s, row.id, username, minutes, now)
                mine.add(row.id)
                shown.append(item_view(row))
            if not shown:
                raise LeaseConflict(f"every frame of group {group_id} is being reviewed by someone else; take the "
                                    "next item instead")
            return GroupView(id=group.id, line_id=group.line_id, verdict=group.verdict, members=shown,
                             mine=frozenset(mine), held_by_others=others)

    def renew(self, group_id: int, username: str, minutes: float, now: float | None = None) -> list[int]:
        """Renew my live leases on the group's waiting members; the ids renewed (LeaseConflict when none is
        mine any more: they lapsed and someone else took them)."""
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            held = list(s.scalars(select(LeaseRow).join(ReviewItemRow, ReviewItemRow.id == LeaseRow.item_id).where(
                ReviewItemRow.group_id == group_id, ReviewItemRow.status == STATUS_PENDING,
                LeaseRow.username == username)))
            renewed = [take_lease(s, lease.item_id, username, minutes, now).item_id for lease in held]
            if not renewed:
                raise LeaseConflict(f"you hold no frame of group {group_id} any more")
            return renewed

    def release(self, group_id: int, username: str) -> None:
        """Give up my leases on the group's waiting members (skip)."""
        with self._db.session(write=True) as s:
            held = s.scalars(select(LeaseRow).join(ReviewItemRow, ReviewItemRow.id == LeaseRow.item_id).where(
                ReviewItemRow.group_id == group_id, ReviewItemRow.status == STATUS_PENDING,
                LeaseRow.username == username))
            for lease in list(held):
                s.delete(lease)

    def take_out(self, group_id: int, item_id: int, username: str, minutes: float,
                 now: float | None = None) -> None:
        """Make a waiting member of the group a single item again, leased to ``username`` (who answers it alone).
        ItemNotFound when it is not a waiting member of that group; LeaseConflict when someone else holds it."""
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None or row.group_id != group_id or row.status != STATUS_PENDING:
                raise ItemNotFound(f"item {item_id} does not wait in group {group_id}")
            take_lease(s, item_id, username, minutes, now)
            row.group_id = None
