"""The admin's audit log as a person reads it: times as clock times, each change in words, runs of leases folded.

The log itself (store.audit) keeps every row as it was written, JSON before/after included; ``/api/audit`` serves
them so. This page shows, per row, who did what to which item, with the before → after of a review in words
("accept → texture", "3 boxes", the comment), and folds consecutive lease rows of one person (opening a group
leases each of its frames; a reviewer who opens item after item leases each) into one row that names the items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.station.store import AuditEntry
from edge.station.views.common import clock

MAX_ITEMS_NAMED = 8


@dataclass
class AuditLine:
    """One row of the page: an audit entry, or a run of one person's leases."""

    at_wall: float
    first_wall: float
    username: str
    action: str
    item_ids: list[int] = field(default_factory=list)
    before: str = ""
    after: str = ""
    seconds_spent: float | None = None
    count: int = 1
    plain_lease: bool = False  # a lease taken afresh (not over from someone else): runs of these fold


def _review(value: Any) -> str:
    if not isinstance(value, dict):
        return "—"
    words = f"{value.get('decision', '?')} → {value.get('final_verdict', '?')}"
    boxes = value.get("boxes")
    if isinstance(boxes, list):
        words += f", {len(boxes)} box{'' if len(boxes) == 1 else 'es'} drawn"
    if value.get("second_review"):
        words += ", second review"
    if value.get("group_id") is not None:
        words += f", with look-alike group {value['group_id']}"
    if value.get("comment"):
        words += f", “{value['comment']}”"
    return f"{words} by {value.get('reviewer', '?')}" if value.get("reviewer") else words


def describe(value: Any) -> str:
    """A before / after value in words: a review as its answer, times as clock times, lists by their length."""
    if value is None:
        return "—"
    if not isinstance(value, dict):
        return str(value)
    parts = []
    for key, item in value.items():
        if key == "review":
            parts.append(_review(item) if item is not None else "no review")
        elif key == "boxes":
            parts.append(f"{len(item)} box{'' if len(item) == 1 else 'es'}" if isinstance(item, list) else "—")
        elif key.endswith("_wall") and isinstance(item, int | float):
            parts.append(f"{key.removesuffix('_wall').replace('_', ' ')} {clock(float(item))}")
        elif item is not None:
            parts.append(f"{key.replace('_', ' ')} {item}")
    return " · ".join(parts) or "—"


def readable(entries: list[AuditEntry]) -> list[AuditLine]:
    """The entries (newest first) as the page's rows, consecutive leases of one person folded into one."""
    lines: list[AuditLine] = []
    for e in entries:
        last = lines[-1] if lines else None
        plain = e.action == "lease" and e.before is None
        if plain and last is not None and last.plain_lease and last.username == e.username:
            last.count += 1
            last.first_wall = e.at_wall
            if e.item_id is not None:
                last.item_ids.append(e.item_id)
            continue
        lines.append(AuditLine(at_wall=e.at_wall, first_wall=e.at_wall, username=e.username, action=e.action,
                               item_ids=[e.item_id] if e.item_id is not None else [], before=describe(e.before),
                               after=describe(e.after), seconds_spent=e.seconds_spent, plain_lease=plain))
    for line in lines:
        if line.count > 1:
            named = ", ".join(f"#{i}" for i in sorted(line.item_ids)[:MAX_ITEMS_NAMED])
            more = len(line.item_ids) - MAX_ITEMS_NAMED
            line.before, line.after = "—", f"{line.count} leases: {named}" + (f" and {more} more" if more > 0 else "")
    return lines
