"""What a reviewer gets next: the queue's head, as its item page or, for a look-alike group, the group's page; and
the items and groups they skipped, kept out of their way until nothing else waits."""

from __future__ import annotations

import threading
from collections import OrderedDict

from edge.station.store import Store

MAX_SKIPS = 1000  # per reviewer; the oldest skip is forgotten first


class Skips:
    """Per reviewer, what they skipped (``s``): items and groups their "next" passes over while anything else waits.
    Kept in the console's memory: a restart forgets them, as a reload of a paper list would."""

    def __init__(self) -> None:
        self._items: dict[str, OrderedDict[int, None]] = {}
        self._groups: dict[str, OrderedDict[int, None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _add(table: dict[str, OrderedDict[int, None]], username: str, key: int) -> None:
        entries = table.setdefault(username, OrderedDict())
        entries[key] = None
        entries.move_to_end(key)
        while len(entries) > MAX_SKIPS:
            entries.popitem(last=False)

    def skip_item(self, username: str, item_id: int) -> None:
        with self._lock:
            self._add(self._items, username, item_id)

    def skip_group(self, username: str, group_id: int) -> None:
        with self._lock:
            self._add(self._groups, username, group_id)

    def of(self, username: str) -> tuple[list[int], list[int]]:
        with self._lock:
            return list(self._items.get(username, ())), list(self._groups.get(username, ()))

    def clear(self, username: str) -> None:
        with self._lock:
            self._items.pop(username, None)
            self._groups.pop(username, None)


def work_url(store: Store, item_id: int) -> str:
    """The page for a claimed head: its group's page when it waits with look-alikes, else its own."""
    group_id = store.queue.group_of(item_id)
    if group_id is not None and store.queue.waiting_in_groups([group_id]).get(group_id, 0) > 1:
        return f"/groups/{group_id}"
    return f"/items/{item_id}"


def claim_next_url(store: Store, skips: Skips, username: str, lease_minutes: float,
                   exclude: int | None = None) -> str:
    """Lease the next work for ``username`` and return its page ("/" when nothing waits). Skipped items and groups
    come last: only when nothing else waits are they forgotten and offered again."""
    items, groups = skips.of(username)
    avoid = [*items, *([exclude] if exclude is not None else [])]
    item_id = store.queue.claim_next(username, lease_minutes, None, avoid, exclude_groups=groups)
    if item_id is None and (items or groups):
        skips.clear(username)
        item_id = store.queue.claim_next(username, lease_minutes, None, exclude)
    return "/" if item_id is None else work_url(store, item_id)
