"""What a reviewer asked to see of the queue: the filter both the queue pages and the group heads apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge.station.tables import ReviewItemRow

Sort = Literal["uncertainty", "age"]
StatusFilter = Literal["pending", "reviewed", "all"]


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

    def conditions(self, items: Any = ReviewItemRow) -> list[Any]:
        """The filter as conditions on ``items`` (the items table, or an alias of it)."""
        where: list[Any] = []
        if self.status != "all":
            where.append(items.status == self.status)
        if self.line:
            where.append(items.line_id == self.line)
        if self.verdict:
            where.append(items.verdict == self.verdict)
        if self.reason:
            where.append(items.reason == self.reason)
        if self.since is not None:
            where.append(items.captured_wall >= self.since)
        if self.until is not None:
            where.append(items.captured_wall < self.until)
        return where
