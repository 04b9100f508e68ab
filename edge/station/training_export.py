"""The training export: reviewed frames of one line, read from the station database for ``lineside train --line L``.

Use::

    from edge.station.training_export import reviewed_frames
    frames = reviewed_frames(cfg.station, "line-1")                      # a StationConfig …
    frames = reviewed_frames("var/station/station.db", "line-1",         # … or a SQLite path / SQLAlchemy URL
                             storage_dir="var/station/images", since_wall=last_train_wall)
    frames = reviewed_frames(store, "line-1")                            # … or an open Store (the tests)

One ``ReviewedFrame`` per reviewed item of the line, oldest review first; ``edge.transport.reviewed`` says what
each field means. What the station's side adds:

- An item reviewed more than once counts once, with its latest review. A review that was undone in the console is
  gone from the database, so an undone item is either back in the queue (skipped here) or carries its earlier
  review. An item still waiting for its second review is not listed yet.
- Items whose image file is missing are skipped, counted and logged (one line per call).
- ``regions`` are the model's, given only when the final answer is a defect: they say where the model saw the
  defect the operator named.

``since_wall`` (epoch seconds) keeps only items whose latest review was made at or after it, for incremental
training. The read is two queries (items with their latest review, then their regions), however many items.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import selectinload

from edge.config import StationConfig
from edge.findings import GOOD
from edge.station.store import Store, imagefiles
from edge.station.store.records import region_of
from edge.station.tables import STATUS_REVIEWED, ReviewItemRow, ReviewRow
from edge.transport.reviewed import ReviewedFrame

__all__ = ["ReviewedFrame", "ask_again", "reviewed_frames", "station_url"]

log = logging.getLogger(__name__)


def station_url(database: str | Path) -> str:
    """A SQLAlchemy URL for ``database``: itself when it is one already, else a SQLite file path."""
    text = str(database)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


@contextmanager
def _opened(source: Store | StationConfig | str | Path, storage_dir: Path | str | None) -> Iterator[Store]:
    if isinstance(source, Store):
        yield source
        return
    if isinstance(source, StationConfig):
        url, images = source.database_url, storage_dir if storage_dir is not None else source.storage_dir
    else:
        if storage_dir is None:
            raise ValueError("reviewed_frames: storage_dir is needed with a database path or URL "
                             "(the station config's storage_dir, where the review images are)")
        url, images = station_url(source), storage_dir
    parsed = make_url(url)
    # Store() would create an empty database at a mistyped path; training on nothing must be an error instead
    if (parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:"
            and not parsed.database.startswith("file:") and not Path(parsed.database).is_file()):
        raise FileNotFoundError(f"station database {parsed.database} does not exist")
    store = Store(url, images)
    try:
        yield store
    finally:
        store.close()


def reviewed_frames(store_or_url: Store | StationConfig | str | Path, line_id: str, since_wall: float | None = None,
                    *, storage_dir: Path | str | None = None) -> list[ReviewedFrame]:
    """Every reviewed item of ``line_id`` with its final review, oldest review first (see the module doc).

    ``store_or_url``: an open Store, a StationConfig, or a SQLite path / SQLAlchemy URL (then ``storage_dir``
    is required). Raises FileNotFoundError for a SQLite file that does not exist.
    """
    with _opened(store_or_url, storage_dir) as store:
        latest = (select(ReviewRow.item_id, func.max(ReviewRow.id).label("review_id"))
                  .join(ReviewItemRow, ReviewItemRow.id == ReviewRow.item_id)
                  .where(ReviewItemRow.line_id == line_id)
                  .group_by(ReviewRow.item_id).subquery())
        query = (select(ReviewItemRow, ReviewRow)
                 .join(latest, latest.c.item_id == ReviewItemRow.id)
                 .join(ReviewRow, ReviewRow.id == latest.c.review_id)
                 .where(ReviewItemRow.status == STATUS_REVIEWED)
                 .options(selectinload(ReviewItemRow.regions))
                 .order_by(ReviewRow.created_wall, ReviewItemRow.id))
        if since_wall is not None:
            query = query.where(ReviewRow.created_wall >= since_wall)
        frames: list[ReviewedFrame] = []
        missing: list[str] = []
        with store.session() as s:
            for item, review in s.execute(query):
                try:
                    path = imagefiles.resolve(store.storage_dir, item.image_path)
                except imagefiles.ImagePathError:
                    path = None
                if path is None or not path.is_file():
                    missing.append(item.frame_id)
                    continue
                final = review.final_verdict
                frames.append(ReviewedFrame(
                    item_id=item.id, frame_id=item.frame_id, line_id=item.line_id, source_id=item.source_id,
                    image_path=path, width=item.width, height=item.height, captured_wall=item.captured_wall,
                    verdict=item.verdict, class_scores={str(k): float(v) for k, v in item.class_scores.items()},
                    uncertainty=item.uncertainty, anomaly_score=item.anomaly_score, reason=item.reason,
                    pack_version=item.pack_version, profile_version=item.profile_version,
                    final_verdict=final, defect_class=None if final == GOOD else final, decision=review.decision,
                    reviewer=review.reviewer, reviewed_wall=review.created_wall,
                    regions=() if final == GOOD else tuple(region_of(r) for r in item.regions),
                    operator_boxes=review.boxes, comment=review.comment))
    if missing:
        log.warning("reviewed_frames: line %s: skipped %d of %d reviewed items whose image file is missing "
                    "(first: %s)", line_id, len(missing), len(missing) + len(frames), missing[0])
    return frames


def ask_again(store_or_url: Store | StationConfig | str | Path, item_ids: list[int], requested_by: str,
              storage_dir: Path | str | None = None) -> list[int]:
    """Put these reviewed items back in the station's queue for another answer (``Reviews.ask_again``); the ids
    sent back (an item waiting already, or gone, is not)."""
    if not item_ids:
        return []
    with _opened(store_or_url, storage_dir) as store:
        return store.reviews.ask_again(item_ids, requested_by)
