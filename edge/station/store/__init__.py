"""The station's store: review items, their regions and people's reviews in a SQL database, their images as files.

``Store`` opens the database (``db``: engine, SQLite's settings, sessions, durability) and hands out one object per
role, each in its own module:

- ``store.ingest`` (``ingest``): items written exactly once, images before rows; decision summaries.
- ``store.queue`` (``queue``): queue pages, items, counts, and the leases that keep two reviewers off one item.
- ``store.reviews`` (``reviews``): people's answers, boxes, second reviews, undo.
- ``store.audit`` (``audit``): the audit log, written in the same transaction as each change.
- ``store.groups`` (``groups``): waiting items that look alike, grouped on arrival by their embeddings (the ingest
  assigns them); the group's members, leases and take-outs for the console.

What they hand out are plain values (``records``); regions are ``edge.findings.Region``. The station's other
modules (users, stats, export, retention …) read and write through ``store.session()``.
"""

from __future__ import annotations

from pathlib import Path

from edge.station.store.audit import AuditEntry, AuditLog
from edge.station.store.db import Database
from edge.station.store.filters import QueueFilter
from edge.station.store.group_queue import GroupQueue
from edge.station.store.groups import Grouper, GroupingPolicy
from edge.station.store.ingest import Ingest
from edge.station.store.queue import ItemNotFound, LeaseConflict, ReviewQueue
from edge.station.store.records import ItemView, LeaseView, QueuePage, ReferenceView, ReviewView
from edge.station.store.reviews import ReviewError, Reviews

__all__ = ["AuditEntry", "Database", "GroupingPolicy", "ItemNotFound", "ItemView", "LeaseConflict", "LeaseView",
           "QueueFilter", "QueuePage", "ReferenceView", "ReviewError", "ReviewView", "Store"]


class Store(Database):
    """The station's database and image folder, with its roles: ``ingest``, ``queue``, ``reviews``, ``audit``,
    ``groups``."""

    def __init__(self, database_url: str, storage_dir: Path | str, grouping: GroupingPolicy | None = None) -> None:
        super().__init__(database_url, storage_dir)
        self.ingest = Ingest(self, Grouper(grouping))
        self.queue = ReviewQueue(self)
        self.reviews = Reviews(self)
        self.audit = AuditLog(self)
        self.groups = GroupQueue(self)
