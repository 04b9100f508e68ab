"""The reviews role of the store: people's answers and the rules they follow — decisions, boxes, second review, undo.

Every answer, and every undo, is written in one transaction with its audit row and the item's new state.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.findings import GOOD, Region
from edge.station.store.audit import record as audit_record
from edge.station.store.db import Database
from edge.station.store.queue import ItemNotFound, LeaseConflict, take_lease
from edge.station.store.records import ReviewView, review_json, review_view
from edge.station.tables import (
    DECISIONS,
    STATUS_PENDING,
    STATUS_REVIEWED,
    LeaseRow,
    RegionRow,
    ReviewItemRow,
    ReviewRow,
)

MAX_BOXES = 200
MAX_COMMENT_CHARS = 2000


class ReviewError(ValueError):
    """A review that cannot be recorded; the text says why (shown to the reviewer / API client)."""


def model_boxes(regions: Iterable[Region | RegionRow]) -> list[dict[str, Any]]:
    """The model's regions as boxes in the operator's format (what an operator's edit starts from)."""
    return [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "class": r.defect_class} for r in regions]


def effective_boxes(row: ReviewItemRow, review: ReviewRow | None) -> list[dict[str, Any]]:
    """The boxes that stand for an item: the operator's from ``review`` when they edited them, else the model's."""
    if review is not None and review.boxes is not None:
        return list(review.boxes)
    return model_boxes(row.regions)


def check_boxes(raw: Any, width: int, height: int, classes: list[str]) -> list[dict[str, Any]]:
    """The operator's boxes, validated and clipped to the frame: ``[{x, y, w, h, class}]`` in frame pixels, each of
    a defect class of the item. ReviewError says what is wrong (the console shows it)."""
    if not isinstance(raw, list):
        raise ReviewError("boxes must be a list of {x, y, w, h, class}")
    if len(raw) > MAX_BOXES:
        raise ReviewError(f"{len(raw)} boxes; at most {MAX_BOXES}")
    defects = [c for c in classes if c != GOOD]
    out: list[dict[str, Any]] = []
    for i, box in enumerate(raw, 1):
        if not isinstance(box, dict):
            raise ReviewError(f"box {i} is not an object")
        try:
            x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            raise ReviewError(f"box {i} needs numbers x, y, w, h") from None
        if not all(abs(v) < 1e7 for v in (x, y, w, h)):  # also refuses NaN and infinity
            raise ReviewError(f"box {i} is out of range")
        if w <= 0 or h <= 0:
            raise ReviewError(f"box {i} has no area ({w:g}×{h:g})")
        x0, y0 = max(0, min(width - 1, round(x))), max(0, min(height - 1, round(y)))
        x1, y1 = max(x0 + 1, min(width, round(x + w))), max(y0 + 1, min(height, round(y + h)))
        cls = box.get("class")
        if cls not in defects:
            raise ReviewError(f"box {i}: class {cls!r} is not a defect class of this item; use one of "
                              f"{', '.join(defects) or '(none)'}")
        out.append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "class": cls})
    return out


def picked_for_second_review(frame_id: str, fraction: float) -> bool:
    """Whether an item goes to a second reviewer: a hash of its frame id, so the choice is reproducible (the same
    after an undo) and independent of who reviews first or when."""
    if fraction <= 0:
        return False
    return zlib.crc32(frame_id.encode()) / 2**32 < fraction


def _final_verdict(row: ReviewItemRow, decision: str, defect_class: str | None) -> str:
    """The item's label after ``decision`` (see ``Reviews.add``); ReviewError for an answer that does not fit it."""
    if decision == "relabel":
        if defect_class is None:
            raise ReviewError("relabel needs defect_class")
        if defect_class not in row.class_scores:
            raise ReviewError(f"unknown class {defect_class!r} for item {row.id}; "
                              f"use one of {', '.join(row.class_scores)}")
        return defect_class
    if defect_class is not None:
        raise ReviewError(f"defect_class is only for relabel, not {decision}")
    if decision == "accept":
        return row.verdict
    if row.verdict == GOOD:
        raise ReviewError(f"item {row.id} is already verdict 'good'; to mark it defective use relabel with a class")
    return GOOD


@dataclass(frozen=True)
class _Answer:
    decision: str
    reviewer: str
    defect_class: str | None
    seconds_spent: float | None
    comment: str | None
    second_review_fraction: float
    group_id: int | None = None


def _checked_answer(decision: str, reviewer: str, seconds_spent: float | None, comment: str | None,
                    defect_class: str | None) -> tuple[str | None, str | None]:
    """The answer's own checks (before any item is read); the comment and class, stripped (None when empty)."""
    if decision not in DECISIONS:
        raise ReviewError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
    reviewer = reviewer.strip()
    if not reviewer or len(reviewer) > 100:
        raise ReviewError("reviewer must be 1 to 100 characters")
    if seconds_spent is not None and not 0 <= seconds_spent < 86_400:
        raise ReviewError(f"seconds_spent {seconds_spent} out of range")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise ReviewError(f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS}")
    return comment, (defect_class or "").strip() or None


def _record(s: Session, row: ReviewItemRow, lease: LeaseRow | None, answer: _Answer, now: float,
            boxes: list[dict[str, Any]] | None) -> ReviewView:
    """One item's review, its new state, its released lease and its audit row, in ``s`` (see ``Reviews.add``)."""
    reviewer, seconds_spent = answer.reviewer, answer.seconds_spent
    if lease is not None and lease.expires_wall > now and lease.username != reviewer:
        raise LeaseConflict(f"item {row.id} is being reviewed by {lease.username}; your review was "
                            "not saved — take the next item instead")
    if row.second_review_of == reviewer:
        raise ReviewError(f"item {row.id} waits for a second review by someone other than you "
                          "(you gave the first); take the next item instead")
    final = _final_verdict(row, answer.decision, answer.defect_class)
    if boxes is not None:
        boxes = check_boxes(boxes, row.width, row.height, list(row.class_scores))
        if final == GOOD and boxes:
            raise ReviewError("a good part has no defect boxes: delete them, or relabel with a defect class")
    if seconds_spent is None and lease is not None and lease.username == reviewer:
        seconds_spent = round(max(0.0, now - lease.claimed_wall), 1)
    previous = row.reviews[-1] if row.reviews else None
    second = row.second_review_of is not None
    review = ReviewRow(item_id=row.id, decision=answer.decision, final_verdict=final,
                       defect_class=None if final == GOOD else final, reviewer=reviewer,
                       created_wall=now, seconds_spent=seconds_spent, boxes=boxes, comment=answer.comment,
                       second_review=second, group_id=answer.group_id)
    s.add(review)
    before = {"status": row.status, "review": review_json(previous), "boxes": effective_boxes(row, previous)}
    if second:
        row.second_review_of, row.status = None, STATUS_REVIEWED
    elif previous is None and picked_for_second_review(row.frame_id, answer.second_review_fraction):
        row.second_review_of, row.status = reviewer, STATUS_PENDING  # back in the queue, for someone else
    else:
        row.status = STATUS_REVIEWED
    if lease is not None and lease.username == reviewer:
        s.delete(lease)
    s.flush()
    after: dict[str, Any] = {"status": row.status, "second_review_of": row.second_review_of,
                             "review": review_json(review), "boxes": effective_boxes(row, review)}
    if answer.group_id is not None:
        after["group_id"] = answer.group_id
    audit_record(s, reviewer, "review", row.id, before, after, seconds_spent, now=now)
    return review_view(review)


class Reviews:
    """People's answers about items: recorded, sent for a second review when sampled, taken back."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, item_id: int, decision: str, reviewer: str, defect_class: str | None = None,
            seconds_spent: float | None = None, now: float | None = None, *,
            boxes: list[dict[str, Any]] | None = None, comment: str | None = None,
            second_review_fraction: float = 0.0) -> ReviewView:
        """Record a person's answer and mark the item reviewed. Reviewing again adds a row; the latest wins.

        - ``accept``: the model's verdict is right (final verdict = the item's verdict).
        - ``reject``: the model called a defect but the part is good (final verdict = 'good'); not valid for
          an item the model already called good — use ``relabel`` to name its defect.
        - ``relabel``: the part is ``defect_class`` (one of the item's class_scores keys, 'good' included).

        ``boxes`` (``[{x, y, w, h, class}]``, frame pixels, defect classes of the item) are the operator's own when
        they added, moved, resized or deleted boxes: they then stand instead of the model's regions (which stay as
        the model sent them); None keeps the model's. A final answer 'good' takes no boxes. ``comment`` is free text.

        Second review: a first answer on an item picked by ``picked_for_second_review(frame_id,
        second_review_fraction)`` puts it back in the queue (pending, ``second_review_of`` = this reviewer) for
        anyone else; their answer is marked ``second_review`` and closes the item. The first reviewer cannot give
        it (ReviewError).

        Refused with LeaseConflict while someone other than ``reviewer`` holds a live lease on the item. The
        reviewer's own lease is released (the item is done). The audit row (before = the previous latest review
        and the boxes that stood, after = this one) is written in the same transaction; time spent is the client's
        figure, else the time since the reviewer's lease was claimed.
        """
        comment, defect_class = _checked_answer(decision, reviewer, seconds_spent, comment, defect_class)
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                raise ItemNotFound(f"no review item {item_id}")
            return _record(s, row, s.get(LeaseRow, item_id), _Answer(
                decision, reviewer.strip(), defect_class, seconds_spent, comment, second_review_fraction), now, boxes)

    def answer_group(self, group_id: int, decision: str, reviewer: str, defect_class: str | None = None,
                     seconds_spent: float | None = None, now: float | None = None, *, comment: str | None = None,
                     second_review_fraction: float = 0.0) -> list[ReviewView]:
        """One answer for every waiting member of a look-alike group that ``reviewer`` holds (store.group_queue):
        each gets its own review row (``group_id`` set) and audit row, as ``add`` would write them, all in one
        transaction; the model's regions stand (boxes are drawn on single items). ``seconds_spent`` is the time on
        the whole group, shared out evenly. ReviewError when the reviewer holds none of its frames or the answer
        does not fit one of them (then nothing is saved)."""
        comment, defect_class = _checked_answer(decision, reviewer, seconds_spent, comment, defect_class)
        now = time.time() if now is None else now
        reviewer = reviewer.strip()
        with self._db.session(write=True) as s:
            held = list(s.execute(
                select(ReviewItemRow, LeaseRow).join(LeaseRow, LeaseRow.item_id == ReviewItemRow.id)
                .where(ReviewItemRow.group_id == group_id, ReviewItemRow.status == STATUS_PENDING,
                       LeaseRow.username == reviewer, LeaseRow.expires_wall > now)
                .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id)))
            if not held:
                raise ReviewError(f"you hold no waiting frame of group {group_id} (answered, or your lease lapsed); "
                                  "nothing saved")
            share = None if seconds_spent is None else round(seconds_spent / len(held), 1)
            answer = _Answer(decision, reviewer, defect_class, share, comment, second_review_fraction, group_id)
            return [_record(s, row, lease, answer, now, None) for row, lease in held]

    def ask_again(self, item_ids: Iterable[int], requested_by: str, now: float | None = None) -> list[int]:
        """Put reviewed items back in the queue for another answer (pending, as single items, their reviews kept):
        the frames whose answers the line's model contradicts most surely (`lineside train --recheck`). The next
        answer is an ordinary review and the latest wins; until it is given the item is not in the training
        export. Items that are not reviewed now (waiting, or gone) are left as they are. Each one sent back gets an
        audit row (``recheck``, by ``requested_by``), in one transaction; returns their ids."""
        now = time.time() if now is None else now
        sent: list[int] = []
        with self._db.session(write=True) as s:
            for item_id in dict.fromkeys(item_ids):
                row = s.get(ReviewItemRow, item_id)
                if row is None or row.status != STATUS_REVIEWED or not row.reviews:
                    continue
                before = {"status": row.status, "review": review_json(row.reviews[-1]), "group_id": row.group_id}
                row.status, row.group_id = STATUS_PENDING, None
                s.flush()
                audit_record(s, requested_by, "recheck", row.id, before, {"status": row.status}, now=now)
                sent.append(row.id)
        return sent

    def undo_last(self, username: str, minutes: float, now: float | None = None) -> int | None:
        """Take back ``username``'s most recent answer (``undo_last_answer``); the id of the (first) item it
        reopened, None when there is nothing of theirs to undo."""
        undone = self.undo_last_answer(username, minutes, now)
        return undone.item_ids[0] if undone is not None else None

    def undo_last_answer(self, username: str, minutes: float, now: float | None = None) -> Undone | None:
        """Take back ``username``'s most recent answer: its review row goes (the audit log keeps it), the item
        returns to its previous state (pending when it has no other review, waiting for its second review again
        when the undone one was that) and to the user, leased. A group answer is taken back whole: every review
        of it, each item back in its group. None when there is nothing of theirs to undo. Refused with
        LeaseConflict while someone else holds an item, and with ReviewError when someone reviewed one of them
        again since (theirs is the latest answer); then nothing is undone.
        """
        now = time.time() if now is None else now
        with self._db.session(write=True) as s:
            last = s.scalar(select(ReviewRow).where(ReviewRow.reviewer == username)
                            .order_by(ReviewRow.id.desc()).limit(1))
            if last is None:
                return None
            answer = [last] if last.group_id is None else list(s.scalars(
                select(ReviewRow).where(ReviewRow.reviewer == username, ReviewRow.group_id == last.group_id,
                                        ReviewRow.created_wall == last.created_wall).order_by(ReviewRow.id)))
            for review in answer:
                _undo(s, review, username, minutes, now)
            return Undone(item_ids=[r.item_id for r in answer], group_id=last.group_id)


@dataclass(frozen=True)
class Undone:
    """What an undo reopened: the items (one, or a group answer's), and their group."""

    item_ids: list[int]
    group_id: int | None


def _undo(s: Session, review: ReviewRow, username: str, minutes: float, now: float) -> None:
    item = review.item
    if item.reviews[-1].id != review.id:
        raise ReviewError(f"item {item.id} was reviewed again by {item.reviews[-1].reviewer} after you; "
                          "nothing undone")
    before = {"status": item.status, "second_review_of": item.second_review_of, "review": review_json(review)}
    item.reviews.remove(review)  # delete-orphan cascade deletes the row
    if review.second_review and item.reviews:
        item.second_review_of, item.status = item.reviews[-1].reviewer, STATUS_PENDING
    else:
        item.second_review_of = None
        item.status = STATUS_REVIEWED if item.reviews else STATUS_PENDING
    s.flush()
    take_lease(s, item.id, username, minutes, now)
    audit_record(s, username, "undo", item.id, before,
                 {"status": item.status, "second_review_of": item.second_review_of,
                  "review": review_json(item.reviews[-1] if item.reviews else None)},
                 now=now)
