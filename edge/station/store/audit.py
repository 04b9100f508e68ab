"""The audit role of the store: every change made through the console, written in the same transaction as the change.

Same transaction, so that there is never a review without its audit row or an audit row for a review that
was rolled back. Rows are append-only; nothing in the station updates or deletes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from edge.station.store.db import Database
from edge.station.tables import AuditRow

ACTIONS = ("login", "login_failed", "logout", "lease", "review", "undo", "recheck", "user_add", "user_disable")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at_wall: float
    username: str
    action: str
    item_id: int | None
    before: Any
    after: Any
    seconds_spent: float | None


def record(session: Session, username: str, action: str, item_id: int | None = None, before: Any = None,
           after: Any = None, seconds_spent: float | None = None, now: float | None = None) -> None:
    """Add one audit row to ``session`` (committed, or rolled back, with the change it describes)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    session.add(AuditRow(at_wall=time.time() if now is None else now, username=username, action=action,
                         item_id=item_id, before=before, after=after, seconds_spent=seconds_spent))


def entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(id=row.id, at_wall=row.at_wall, username=row.username, action=row.action,
                      item_id=row.item_id, before=row.before, after=row.after, seconds_spent=row.seconds_spent)


def recent_query(limit: int = 100, item_id: int | None = None, username: str | None = None,
                 action: str | None = None) -> Select[Any]:
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if item_id is not None:
        query = query.where(AuditRow.item_id == item_id)
    if username is not None:
        query = query.where(AuditRow.username == username)
    if action is not None:
        query = query.where(AuditRow.action == action)
    return query


class AuditLog:
    """The audit log as the console reads it, and its rows for changes that have no other row (login, logout)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, username: str, action: str, item_id: int | None = None, before: Any = None,
               after: Any = None) -> None:
        """An audit row in a transaction of its own."""
        with self._db.session(write=True) as s:
            record(s, username, action, item_id, before, after)

    def recent(self, limit: int = 100, item_id: int | None = None, username: str | None = None,
               action: str | None = None) -> list[AuditEntry]:
        """The latest rows, newest first, of one item, one user or one action if asked."""
        with self._db.session() as s:
            return [entry(row) for row in s.scalars(recent_query(limit, item_id, username, action))]
