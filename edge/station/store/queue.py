"""The queue role of the store: what the console reads (queue pages, items, counts) and the leases on items.

The queue is a query: filters, two sort orders, keyset ("seek") pagination, leases of others hidden. Why keyset and
not OFFSET: ``OFFSET 50000`` makes the database walk 50,000 rows to throw them away, so page 1,000 of a 100,000-item
queue gets slow; a cursor "after (0.41, 7731)" lets it jump through the index (``ix_review_items_queue`` /
``ix_review_items_age`` in tables.py) straight to the next page. The cursor is the sort key of the last row shown:
``<value>:<id>``.

Leases. Opening an item leases it to the reviewer for some minutes (one ``leases`` row per item at most), so the
queue and "next" of everyone else skip it; an expired lease is free for anyone to take over.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload

from edge.findings import GOOD
from edge.station.store.audit import record as audit_record
from edge.station.store.db import Database
from edge.station.store.filters import QueueFilter, Sort
from edge.station.store.groups import group_head, group_sizes
from edge.station.store.imagefiles import resolve, servable
from edge.station.store.records import ItemView, LeaseView, QueuePage, ReferenceView, item_view, lease_view
from edge.station.tables import (
    STATUS_PENDING,
    STATUS_REVIEWED,
    AuditRow,
    HeatmapRow,
    LeaseRow,
    ReviewItemRow,
    ReviewRow,
)

CLAIM_ATTEMPTS = 5


class ItemNotFound(LookupError):
    """No review item with that id."""


class LeaseConflict(RuntimeError):
    """Someone else holds a live lease on the item; the text names them and until when."""


class CursorError(ValueError):
    """A page cursor that is not ``<number>:<id>``."""


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
    if flt.status == STATUS_PENDING:
        query = query.where(group_head(flt))
    if username is not None:
        query = query.where(*for_reviewer(username, now))
    return _order_and_seek(query, flt.sort, after).limit(limit)


def _ids(exclude: int | Collection[int] | None) -> list[int]:
    return [] if exclude is None else [exclude] if isinstance(exclude, int) else list(exclude)


def head_query(flt: QueueFilter, username: str, now: float, exclude: int | Collection[int] | None = None,
               exclude_groups: Collection[int] = ()) -> Select[Any]:
    """The id of the first item (a single one, or the head of its group) of the queue this reviewer may take,
    other than the items ``exclude`` and the groups ``exclude_groups`` names."""
    query = select(ReviewItemRow.id).where(*flt.conditions(), *for_reviewer(username, now))
    if flt.status == STATUS_PENDING:
        query = query.where(group_head(flt))
    if ids := _ids(exclude):
        query = query.where(ReviewItemRow.id.not_in(ids))
    if exclude_groups:
        query = query.where(or_(ReviewItemRow.group_id.is_(None), ReviewItemRow.group_id.not_in(list(exclude_groups))))
    return _order_and_seek(query, flt.sort, None).limit(1)


def take_lease(s: Session, item_id: int, username: str, minutes: float, now: float) -> LeaseView:
    """Inside a write transaction: give ``username`` the lease (new, renewed or taken over once expired)."""
    row = s.get(LeaseRow, item_id)
    expires = now + minutes * 60
    if row is None:
        row = LeaseRow(item_id=item_id, username=username, claimed_wall=now, expires_wall=expires)
        s.add(row)
        audit_record(s, username, "lease", item_id, None, {"expires_wall": expires}, now=now)
    elif row.username == username:
        row.expires_wall = expires  # a renewal (or my own lapsed lease): time spent keeps running, no audit row
    elif row.expires_wall <= now:
        before = {"username": row.username, "expires_wall": row.expires_wall}
        row.username, row.claimed_wall, row.expires_wall = username, now, expires
        audit_record(s, username, "lease", item_id, before, {"expires_wall": expires}, now=now)
    else:
        raise LeaseConflict(f"item {item_id} is being reviewed by {row.username} until "
                            f"{time.strftime('%H:%M:%S', time.localtime(row.expires_wall))}; "
                            "take the next item instead")
    s.flush()
    return lease_view(row)


def _group_counts(session: Session, column: Any, where: Any = None) -> dict[str, int]:
    query = select(column, func.count()).group_by(column)
    if where is not None:
        query = query.where(where)
    return {str(key): int(n) for key, n in session.execute(query)}


class ReviewQueue:
    """The items waiting for people and the ones they answered, as the console pages through them; leases."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- items ----

    def list_items(self, status: str | None = STATUS_PENDING, limit: int = 50,
                   offset: int = 0) -> list[ItemView]:
        """Items in queue order (most uncertain first, then oldest); ``status=None`` lists all."""
        query = (select(ReviewItemRow)
                 .options(selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))
                 .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id)
                 .limit(limit).offset(offset))
        if status is not None:
            query = query.where(ReviewItemRow.status == status)
        with self._db.session() as s:
            return [item_view(row) for row in s.scalars(query)]

    def pending(self, limit: int = 50, offset: int = 0) -> list[ItemView]:
        """The review queue: pending items, most uncertain first."""
        return self.list_items(STATUS_PENDING, limit, offset)

    def next_pending_id(self, exclude: int | None = None) -> int | None:
        """Id of the item at the head of the queue (other than ``exclude``); None when the queue is empty."""
        query = (select(ReviewItemRow.id).where(ReviewItemRow.status == STATUS_PENDING)
                 .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id).limit(1))
        if exclude is not None:
            query = query.where(ReviewItemRow.id != exclude)
        with self._db.session() as s:
            return s.scalar(query)

    def page(self, flt: QueueFilter, username: str | None = None, limit: int = 50,
             after: tuple[float, int] | None = None, now: float | None = None, offset: int = 0) -> QueuePage:
        """One page of the filtered queue, hiding items someone other than ``username`` is reviewing.

        Page with ``after`` (the previous page's ``next_cursor``): it stays fast however deep the page is.
        ``offset`` is kept for old API clients and costs a walk over the skipped rows.
        """
        now = time.time() if now is None else now
        query = page_query(flt, username, now, limit + 1, after).offset(offset).options(
            selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))
        with self._db.session() as s:
            rows = list(s.scalars(query))
            total = s.scalar(select(func.count()).select_from(ReviewItemRow).where(*flt.conditions())) or 0
            more = len(rows) > limit
            rows = rows[:limit]
            items = [item_view(row) for row in rows]
            sizes = group_sizes(s, {row.group_id for row in rows if row.group_id is not None}) \
                if flt.status == STATUS_PENDING else {}
        return QueuePage(items=items, next_cursor=make_cursor(flt.sort, rows[-1]) if more else None,
                         total=int(total), group_sizes=sizes)

    def get_item(self, item_id: int) -> ItemView | None:
        """One item with its regions, reviews and heatmap."""
        with self._db.session() as s:
            row = s.get(ReviewItemRow, item_id,
                        options=[selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews)])
            if row is None:
                return None
            return item_view(row, s.scalar(select(HeatmapRow.png).where(HeatmapRow.item_id == item_id)))

    def image_file(self, item_id: int) -> Path | None:
        """The image file of an item, looked up by id (never from a client-supplied path)."""
        with self._db.session() as s:
            relative = s.scalar(select(ReviewItemRow.image_path).where(ReviewItemRow.id == item_id))
        return None if relative is None else servable(resolve(self._db.storage_dir, relative))

    def good_references(self, line_id: str, limit: int = 4, exclude: int | None = None) -> list[ReferenceView]:
        """The line's most recently reviewed-good frames, newest answer first: items whose latest review says good.

        Walks the good answers newest first (``ix_reviews_final_verdict``) and stops at ``limit`` hits, so it stays
        quick however many items there are; a good answer later overruled by another review does not count."""
        newer = aliased(ReviewRow)
        query = (select(ReviewRow.item_id, ReviewItemRow.frame_id, ReviewRow.reviewer, ReviewRow.created_wall)
                 .join(ReviewItemRow, ReviewItemRow.id == ReviewRow.item_id)
                 .where(ReviewRow.final_verdict == GOOD, ReviewItemRow.line_id == line_id,
                        ReviewItemRow.status == STATUS_REVIEWED,
                        ~exists().where(newer.item_id == ReviewRow.item_id, newer.id > ReviewRow.id))
                 .order_by(ReviewRow.id.desc()).limit(limit))
        if exclude is not None:
            query = query.where(ReviewRow.item_id != exclude)
        with self._db.session() as s:
            return [ReferenceView(item_id=i, frame_id=f, reviewer=r, reviewed_wall=w)
                    for i, f, r, w in s.execute(query)]

    # ---- counts ----

    def group_of(self, item_id: int) -> int | None:
        """The look-alike group a waiting item waits in (None: alone, reviewed, or no such item)."""
        with self._db.session() as s:
            return s.scalar(select(ReviewItemRow.group_id).where(ReviewItemRow.id == item_id,
                                                                 ReviewItemRow.status == STATUS_PENDING))

    def waiting_in_groups(self, group_ids: Collection[int]) -> dict[int, int]:
        """Waiting members of each of these look-alike groups."""
        with self._db.session() as s:
            return group_sizes(s, group_ids)

    def latest_item_id(self) -> int:
        """The highest item id (0 for an empty store): new arrivals have higher ones."""
        with self._db.session() as s:
            return int(s.scalar(select(func.max(ReviewItemRow.id))) or 0)

    def count_arrivals(self, flt: QueueFilter, after_id: int, up_to_id: int) -> int:
        """Items with ids in (after_id, up_to_id] that ``flt`` shows: the live queue's "n new items"."""
        with self._db.session() as s:
            return int(s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.id > after_id, ReviewItemRow.id <= up_to_id, *flt.conditions())) or 0)

    def watermarks(self) -> tuple[int, int]:
        """The highest item id and the highest audit row id (0 for none), in one query: the live queue's two
        watermarks — new arrivals have higher item ids, an item asked again (`lineside train --recheck`) a higher
        audit row."""
        with self._db.session() as s:
            item, audit = s.execute(select(select(func.max(ReviewItemRow.id)).scalar_subquery(),
                                           select(func.max(AuditRow.id)).scalar_subquery())).one()
            return int(item or 0), int(audit or 0)

    def count_asked_again(self, flt: QueueFilter, after_audit_id: int, up_to_audit_id: int,
                          arrived_up_to_id: int) -> int:
        """Items sent back for another answer by audit rows with ids in (after_audit_id, up_to_audit_id] that
        ``flt`` shows and whose ids are ≤ ``arrived_up_to_id``: the live queue's "n asked again". An item with a higher
        id is an arrival the queue has not announced yet: answered and asked again before the next look, it is news
        once, as an arrival."""
        with self._db.session() as s:
            asked = select(AuditRow.item_id).where(AuditRow.id > after_audit_id, AuditRow.id <= up_to_audit_id,
                                                   AuditRow.action == "recheck")
            return int(s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.id.in_(asked), ReviewItemRow.id <= arrived_up_to_id, *flt.conditions())) or 0)

    def filter_choices(self) -> dict[str, list[str]]:
        """Values present in the data, for the queue's filter drop-downs."""
        with self._db.session() as s:
            return {name: sorted(str(v) for v in s.scalars(select(column).distinct()))
                    for name, column in (("line", ReviewItemRow.line_id), ("verdict", ReviewItemRow.verdict),
                                         ("reason", ReviewItemRow.reason))}

    def status_counts(self) -> dict[str, Any]:
        """Just items by status, for every page's header: answered from the queue index, so it stays cheap with
        100,000 items (``counts`` scans the table for the per-verdict figures)."""
        with self._db.session() as s:
            by_status = _group_counts(s, ReviewItemRow.status)
        return {"by_status": {STATUS_PENDING: by_status.get(STATUS_PENDING, 0),
                              STATUS_REVIEWED: by_status.get(STATUS_REVIEWED, 0)}}

    def counts(self) -> dict[str, Any]:
        """Items by status and by model verdict, pending items by verdict, and the number of reviews."""
        with self._db.session() as s:
            by_status = _group_counts(s, ReviewItemRow.status)
            by_verdict = _group_counts(s, ReviewItemRow.verdict)
            pending_by_verdict = _group_counts(s, ReviewItemRow.verdict,
                                               ReviewItemRow.status == STATUS_PENDING)
            reviews = s.scalar(select(func.count()).select_from(ReviewRow)) or 0
        return {
            "items": sum(by_status.values()),
            "by_status": {STATUS_PENDING: by_status.get(STATUS_PENDING, 0),
                          STATUS_REVIEWED: by_status.get(STATUS_REVIEWED, 0)},
            "by_verdict": by_verdict,
            "pending_by_verdict": pending_by_verdict,
            "reviews": reviews,
        }

    # ---- leases ----

    def lease_of(self, item_id: int, now: float | None = None) -> LeaseView | None:
        """The live lease on an item, None when it is free (no lease or an expired one)."""
        now = time.time() if now is None else now
        with self._db.session() as s:
            row = s.get(LeaseRow, item_id)
            return lease_view(row) if row is not None and row.expires_wall > now else None

    def claim(self, item_id: int, username: str, minutes: float, now: float | None = None) -> LeaseView:
        """Take (or renew) the lease on an item for ``minutes``; LeaseConflict if someone else holds it."""
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                raise ItemNotFound(f"no review item {item_id}")
            if row.second_review_of == username:
                raise LeaseConflict(f"item {item_id} waits for a second review by someone other than you "
                                    "(you reviewed it first); take the next item instead")
            return take_lease(s, item_id, username, minutes, now)

    def claim_next(self, username: str, minutes: float, flt: QueueFilter | None = None,
                   exclude: int | Collection[int] | None = None, now: float | None = None,
                   exclude_groups: Collection[int] = ()) -> int | None:
        """Lease the head of the queue for ``username`` and return its id (None when nothing is left). The head of
        a look-alike group stands for its group (the console then opens the group, leasing the rest).

        Finding the head and taking its lease happen in one write transaction; on SQLite that transaction
        holds the database's write lock from its first statement (BEGIN IMMEDIATE), so two reviewers asking at
        the same moment are served one after the other and can never be handed the same item.
        """
        now = time.time() if now is None else now
        flt = flt or QueueFilter()
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                with self._db.session(write=True) as s:
                    item_id = s.scalar(head_query(flt, username, now, exclude, exclude_groups))
                    if item_id is not None:
                        take_lease(s, item_id, username, minutes, now)
                        # PostgreSQL (read committed): the head we read may have been leased, answered and its
                        # lease given back by another reviewer since — our lease then meets no conflict; look again
                        status = s.scalar(select(ReviewItemRow.status).where(ReviewItemRow.id == item_id))
                        if flt.status != "all" and status != flt.status:
                            raise LeaseConflict(f"item {item_id} was answered meanwhile")
                    return item_id
            except (LeaseConflict, IntegrityError):
                # PostgreSQL (read committed): another reviewer leased (or answered) the same head between our read
                # and our insert; the next attempt's head is another one
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
        return None

    def peek_next(self, username: str, exclude: int | Collection[int] | None = None,
                  now: float | None = None) -> int | None:
        """The item ``claim_next`` would most likely hand out, without leasing it (for prefetching its image)."""
        with self._db.session() as s:
            return s.scalar(head_query(QueueFilter(), username, time.time() if now is None else now, exclude))

    def held_by(self, username: str, now: float | None = None) -> list[int]:
        """The items ``username`` holds a live lease on."""
        now = time.time() if now is None else now
        with self._db.session() as s:
            return list(s.scalars(select(LeaseRow.item_id).where(LeaseRow.username == username,
                                                                 LeaseRow.expires_wall > now)))

    def release(self, item_id: int, username: str) -> None:
        """Give up my lease on an item (no-op if I do not hold it)."""
        with self._db.session(write=True) as s:
            row = s.get(LeaseRow, item_id)
            if row is not None and row.username == username:
                s.delete(row)
