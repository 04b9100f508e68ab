"""The review queue as a query: filters, two sort orders, keyset ("seek") pagination, leases of others hidden.

Why keyset and not OFFSET: ``OFFSET 50000`` makes the database walk 50,000 rows to throw them away, so page
1,000 of a 100,000-item queue gets slow; a cursor "after (0.41, 7731)" lets it jump through the index
(``ix_review_items_queue`` / ``ix_review_items_age`` in tables.py) straight to the next page. The cursor is
the sort key of the last row shown: ``<value>:<id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, and_, exists, or_, select

from edge.station.tables import LeaseRow, ReviewItemRow

Sort = Literal["uncertainty", "age"]
StatusFilter = Literal["pending", "reviewed", "all"]


class CursorError(ValueError):
    """A page cursor that is not ``<number>:<id>``."""


@dataclass(frozen=True)
class QueueFilter:
    """What the reviewer asked to see. Empty fields do not filter."""

    status: StatusFilter = "pending"
    line: str | None = None
    verdict: str | None = None  # the model's class
    reason: str | None = None
    since: float | None = None  # captured_wall bounds, epoch seconds
    until: float | None = None
    sort: Sort = "uncertainty"

    def conditions(self) -> list[Any]:
        where: list[Any] = []
        if self.status != "all":
            where.append(ReviewItemRow.status == self.status)
        if self.line:
            where.append(ReviewItemRow.line_id == self.line)
        if self.verdict:
            where.append(ReviewItemRow.verdict == self.verdict)
        if self.reason:
            where.append(ReviewItemRow.reason == self.reason)
        if self.since is not None:
            where.append(ReviewItemRow.captured_wall >= self.since)
        if self.until is not None:
            where.append(ReviewItemRow.captured_wall < self.until)
        return where


def parse_cursor(cursor: str) -> tuple[float, int]:
    try:
        value, item_id = cursor.rsplit(":", 1)
        return float(value), int(item_id)
    except ValueError:
        raise CursorError(f"bad page cursor {cursor!r}; expected <number>:<id>") from None


def make_cursor(sort: Sort, row: ReviewItemRow) -> str:
    value = row.uncertainty if sort == "uncertainty" else row.captured_wall
    return f"{value!r}:{row.id}"


def not_leased_by_others(username: str, now: float) -> Any:
    """Items nobody else holds a live lease on (mine and expired ones stay visible)."""
    return ~exists().where(LeaseRow.item_id == ReviewItemRow.id, LeaseRow.username != username,
                           LeaseRow.expires_wall > now)


def not_my_second_review(username: str) -> Any:
    """Items waiting for a second review are for anyone but their first reviewer."""
    return or_(ReviewItemRow.second_review_of.is_(None), ReviewItemRow.second_review_of != username)


def for_reviewer(username: str, now: float) -> list[Any]:
    """What a reviewer's queue hides: items others are reviewing, and their own first reviews awaiting a second."""
    return [not_leased_by_others(username, now), not_my_second_review(username)]


def _order_and_seek(query: Select[Any], sort: Sort, after: tuple[float, int] | None) -> Select[Any]:
    if sort == "uncertainty":  # most uncertain first, then oldest id
        query = query.order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id)
        if after is not None:
            value, item_id = after
            query = query.where(or_(ReviewItemRow.uncertainty < value,
                                    and_(ReviewItemRow.uncertainty == value, ReviewItemRow.id > item_id)))
        return query
    query = query.order_by(ReviewItemRow.captured_wall, ReviewItemRow.id)  # oldest capture first
    if after is not None:
        value, item_id = after
        query = query.where(or_(ReviewItemRow.captured_wall > value,
                                and_(ReviewItemRow.captured_wall == value, ReviewItemRow.id > item_id)))
    return query


def page_query(flt: QueueFilter, username: str | None, now: float, limit: int,
               after: tuple[float, int] | None = None) -> Select[Any]:
    """One page of rows (fetch ``limit + 1`` to learn whether there is a next page)."""
    query = select(ReviewItemRow).where(*flt.conditions())
    if username is not None:
        query = query.where(*for_reviewer(username, now))
    return _order_and_seek(query, flt.sort, after).limit(limit)


def head_query(flt: QueueFilter, username: str, now: float, exclude: int | None = None) -> Select[Any]:
    """The id of the first item of the queue this reviewer may take."""
    query = select(ReviewItemRow.id).where(*flt.conditions(), *for_reviewer(username, now))
    if exclude is not None:
        query = query.where(ReviewItemRow.id != exclude)
    return _order_and_seek(query, flt.sort, None).limit(1)
