"""The ingest role of the store: each review item written exactly once, its image file before its row; summaries.

``edge.station.ingest.IngestServer`` stores into this, and acknowledges an item only once ``add_item`` or
``add_items`` has returned (see ``db`` for why a returned commit is durable).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edge.durable import fsync_dir, replace_synced
from edge.station.store.db import Database
from edge.station.store.groups import Grouper
from edge.station.store.imagefiles import relative_image_path, resolve, resolver, write_atomic
from edge.station.store.records import region_columns
from edge.station.tables import (
    STATUS_PENDING,
    DecisionSummaryRow,
    EmbeddingRow,
    HeatmapRow,
    RegionRow,
    ReviewItemRow,
)
from edge.transport.schema import ReviewItem, embedding_of
from edge.transport.summary import DecisionSummary

_IMAGE_WRITERS = 16
_image_pool: list[ThreadPoolExecutor] = []


def _write_images(images: list[tuple[Path, bytes]]) -> None:
    """``write_atomic`` for many files: each written to a temp file, fsynced and renamed, then each directory
    fsynced once. The fsyncs run in parallel threads: the file system journals them together, several times
    faster than one after the other (BENCHMARKS.md, "Ingest"). On return every file is whole and durable;
    the first failure is raised (after all writes have finished)."""
    directories = {path.parent for path, _ in images}
    for directory in directories:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(directory.parent)
    if len(images) == 1:
        replace_synced(*images[0])
    else:
        if not _image_pool:
            _image_pool.append(ThreadPoolExecutor(_IMAGE_WRITERS, thread_name_prefix="station-image-writer"))
        futures = [_image_pool[0].submit(replace_synced, path, data) for path, data in images]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    for directory in directories:
        fsync_dir(directory)


def _item_values(item: ReviewItem, image_path: str) -> dict[str, Any]:
    return dict(
        frame_id=item.frame_id, line_id=item.line_id, source_id=item.source_id, seq=item.seq,
        captured_wall=item.captured_wall, decided_wall=item.decided_wall, received_wall=time.time(),
        width=item.width, height=item.height, verdict=item.verdict, class_scores=dict(item.class_scores),
        anomaly_score=item.anomaly_score, anomaly_threshold=item.anomaly_threshold,
        uncertainty=item.uncertainty, reason=item.reason, pack_version=item.pack_version,
        profile_version=item.profile_version, image_path=image_path, status=STATUS_PENDING)


def _vector_bytes(item: ReviewItem) -> bytes | None:
    """The item's embedding as stored (float16 bytes, as sent)."""
    return None if item.embedding is None else embedding_of(item.embedding).astype("<f2").tobytes()


def _group_ids(grouper: Grouper, s: Session, items: list[ReviewItem]) -> list[int | None]:
    """The look-alike group of each item (store.groups), assigned in arrival order per line and verdict."""
    out: list[int | None] = [None] * len(items)
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, item in enumerate(items):
        by_key.setdefault((item.line_id, item.verdict), []).append(i)
    for (line_id, verdict), indexes in by_key.items():
        texts = [items[i].embedding for i in indexes]
        vectors = [None if text is None else embedding_of(text) for text in texts]
        for i, group_id in zip(indexes, grouper.assign(s, line_id, verdict, vectors), strict=True):
            out[i] = group_id
    return out


class Ingest:
    """Writes what the edges send: review items with their regions, heatmaps, embeddings and images (each item in
    its look-alike group, ``store.groups``), and decision summaries."""

    def __init__(self, db: Database, grouper: Grouper | None = None) -> None:
        self._db = db
        self.grouper = grouper or Grouper()

    def has_frame(self, frame_id: str) -> bool:
        with self._db.session() as s:
            return s.scalar(select(ReviewItemRow.id).where(ReviewItemRow.frame_id == frame_id)) is not None

    def add_item(self, item: ReviewItem, jpeg: bytes) -> bool:
        """Store an item exactly once: True when it was new, False when that frame_id was already stored.

        Either way, on return the item is durable and may be acknowledged. A known frame_id writes nothing
        (not even the image). Two concurrent inserts of the same frame_id are settled by the UNIQUE
        constraint: the loser gets False. The image is written before the commit; if the commit fails the
        file stays (harmless, overwritten by the retry) and the exception propagates so that the caller does
        not ack.
        """
        if self.has_frame(item.frame_id):
            return False
        relative = relative_image_path(item.line_id, item.frame_id)
        write_atomic(resolve(self._db.storage_dir, relative), jpeg)
        row = ReviewItemRow(**_item_values(item, relative),
                            regions=[RegionRow(**region_columns(r)) for r in item.regions])
        vector = _vector_bytes(item)
        try:
            with self._db.session(write=True) as s:
                row.group_id = _group_ids(self.grouper, s, [item])[0]
                s.add(row)
                s.flush()  # the item's id
                if item.heatmap_png is not None:
                    s.add(HeatmapRow(item_id=row.id, png=item.heatmap_png))
                if vector is not None:
                    s.add(EmbeddingRow(item_id=row.id, vector=vector))
        except IntegrityError:
            self.grouper.forget()
            if self.has_frame(item.frame_id):
                return False
            raise
        except BaseException:
            self.grouper.forget()  # memory may hold a group the rolled-back transaction made
            raise
        return True

    def add_items(self, batch: list[tuple[ReviewItem, bytes]]) -> list[bool]:
        """``add_item`` for many items in one transaction: one lookup, one commit (one WAL fsync) for the lot.

        Same contract item by item: on return every item is durable and may be acknowledged; the result says
        which were new (a frame_id already stored, or repeated earlier in ``batch``, is False and writes
        nothing). Images are all written and fsynced, each directory fsynced once, before the commit. If the
        transaction fails nothing of it is committed and the exception propagates (the caller acks none; it may
        retry the items one by one to find the one that fails).
        """
        if not batch:
            return []
        ids = list({item.frame_id for item, _ in batch})
        with self._db.session() as s:
            known = set(s.scalars(select(ReviewItemRow.frame_id).where(ReviewItemRow.frame_id.in_(ids))))
        new: list[bool] = []
        rows: list[ReviewItem] = []
        images: list[tuple[Path, bytes]] = []
        image_path = resolver(self._db.storage_dir)
        for item, jpeg in batch:
            if item.frame_id in known:
                new.append(False)
                continue
            known.add(item.frame_id)
            relative = relative_image_path(item.line_id, item.frame_id)
            images.append((image_path(relative), jpeg))
            rows.append(item)
            new.append(True)
        if not rows:
            return new
        _write_images(images)
        values = [_item_values(item, relative_image_path(item.line_id, item.frame_id)) for item in rows]
        try:
            with self._db.session(write=True) as s:
                for value, group_id in zip(values, _group_ids(self.grouper, s, rows), strict=True):
                    value["group_id"] = group_id
                # Core inserts (two statements for the lot) rather than ORM objects: a third of the CPU per item
                returning = insert(ReviewItemRow).returning(ReviewItemRow.id, sort_by_parameter_order=True)
                item_ids = s.execute(returning, values).scalars().all()
                regions = [{"item_id": item_id, **region_columns(r)}
                           for item_id, item in zip(item_ids, rows, strict=True) for r in item.regions]
                if regions:
                    s.execute(insert(RegionRow), regions)
                heatmaps = [{"item_id": item_id, "png": item.heatmap_png}
                            for item_id, item in zip(item_ids, rows, strict=True) if item.heatmap_png is not None]
                if heatmaps:
                    s.execute(insert(HeatmapRow), heatmaps)
                vectors = [{"item_id": item_id, "vector": _vector_bytes(item)}
                           for item_id, item in zip(item_ids, rows, strict=True) if item.embedding is not None]
                if vectors:
                    s.execute(insert(EmbeddingRow), vectors)
        except IntegrityError:  # another writer stored one of them meanwhile: settle item by item
            self.grouper.forget()
            return [is_new and self.add_item(item, jpeg) for (item, jpeg), is_new in zip(batch, new, strict=True)]
        except BaseException:
            self.grouper.forget()  # memory may hold a group the rolled-back transaction made
            raise
        return new

    def has_summary(self, summary_id: str) -> bool:
        with self._db.session() as s:
            query = select(DecisionSummaryRow.id).where(DecisionSummaryRow.summary_id == summary_id)
            return s.scalar(query) is not None

    def add_summary(self, summary: DecisionSummary) -> bool:
        """Store a per-minute decision summary (``edge.transport.summary``) once: True when new, False when that
        summary_id is stored already (then it may be acked). ``edge.station.summaries`` adds them up."""
        if self.has_summary(summary.summary_id):
            return False
        row = DecisionSummaryRow(
            summary_id=summary.summary_id, line_id=summary.line_id, boot=summary.boot,
            minute_wall=float(summary.minute_wall), frames=summary.frames, auto=dict(summary.auto),
            routed=dict(summary.routed), reasons=dict(summary.reasons), versions=dict(summary.versions),
            first_frame_id=summary.first_frame_id, last_frame_id=summary.last_frame_id, received_wall=time.time())
        try:
            with self._db.session(write=True) as s:
                s.add(row)
        except IntegrityError:  # the same summary from two connections at once: the UNIQUE constraint settles it
            if self.has_summary(summary.summary_id):
                return False
            raise
        return True
