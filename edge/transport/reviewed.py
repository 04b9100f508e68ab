"""The station's training export contract: one reviewed frame as `lineside train` learns from it.

The station writes these (edge.station.training_export.reviewed_frames reads them out of its database); the
trainer reads only this type, never the station's tables. What each field means:

- The label is the operator's **final answer**: ``final_verdict`` is ``"good"`` or a defect class,
  ``defect_class`` the same class or None for good. An item reviewed more than once counts once, with its latest
  review (``reviewer``, ``reviewed_wall``, ``decision``).
- ``verdict``, ``class_scores``, ``uncertainty``, ``anomaly_score``, ``pack_version`` and ``profile_version`` are
  what the **daemon** decided and with which model: ``wrong`` (verdict ≠ final_verdict) is the failure
  predictor's target. ``reason`` says why the frame came to review: ``uncertain``, ``unknown_frame``, ``ood``, or
  ``sampled`` (an auto-decided frame sent for the risk audit: an unbiased sample of the auto-decisions, which the
  other reasons are not).
- ``image_path`` is the absolute path of the frame's JPEG under the station's ``storage_dir``.
- ``regions`` are the **model's** boxes (in frame pixels, the model's class and caption), given only when the
  final answer is a defect. ``operator_boxes`` are the operator's own (``[{x, y, w, h, class}]``) when they edited
  the boxes in the console, else None; ``comment`` is their note, if any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.findings import GOOD, Region

__all__ = ["ReviewedFrame"]


@dataclass(frozen=True)
class ReviewedFrame:
    """One reviewed frame with the operator's final answer and what the daemon had decided (see module doc)."""

    item_id: int
    frame_id: str
    line_id: str
    source_id: str
    image_path: Path  # absolute, under the station's storage_dir
    width: int
    height: int
    captured_wall: float
    # the daemon's decision
    verdict: str
    class_scores: Mapping[str, float] = field(hash=False)
    uncertainty: float
    anomaly_score: float
    reason: str  # "uncertain" | "unknown_frame" | "sampled" | "ood"
    pack_version: str
    profile_version: str
    # the operator's final answer (latest review)
    final_verdict: str  # "good" or a defect class
    defect_class: str | None  # None when final_verdict is "good"
    decision: str  # accept | reject | relabel
    reviewer: str
    reviewed_wall: float
    regions: tuple[Region, ...] = ()  # the model's boxes, only when final_verdict is a defect
    operator_boxes: list[dict[str, Any]] | None = field(default=None, hash=False)
    comment: str | None = None

    @property
    def is_good(self) -> bool:
        return self.final_verdict == GOOD

    @property
    def wrong(self) -> bool:
        """The daemon's verdict differs from the operator's (class level)."""
        return self.verdict != self.final_verdict

    @property
    def wrong_good_defect(self) -> bool:
        """The daemon got good vs defect wrong (the level of the routing guarantee)."""
        return (self.verdict == GOOD) != (self.final_verdict == GOOD)
