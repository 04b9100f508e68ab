"""Reviewed items for retraining elsewhere: a zip with the images and either COCO JSON or JSON lines.

What the labels mean. The reviewer answers for the whole frame (accept / reject / relabel) and may edit the boxes.
Every exported record carries the frame's final label (the latest review), and boxes only when the final label is a
defect. When the reviewer added, moved, resized or deleted boxes, theirs are exported, each under the class they
gave it, with ``"source": "operator"``. Otherwise the model's regions are: under the region's own class when the
reviewer accepted the model's verdict, under the reviewer's class when they relabelled it (the reviewer said what
the defect is; the box says where the model saw it), with ``"source": "model"`` so that nobody mistakes them for
hand-drawn boxes. Frames judged good have no boxes. The reviewer's comment, if any, comes along.

Layout of the zip: ``images/<line_id>/<frame_id>.jpg`` (the station's own relative paths) plus
``annotations.json`` (COCO) or ``items.jsonl``. JPEGs are stored, not deflated: they are compressed already.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from edge.findings import GOOD
from edge.station.store import Store, imagefiles
from edge.station.tables import STATUS_REVIEWED, ReviewItemRow, ReviewRow

log = logging.getLogger(__name__)

Format = Literal["coco", "jsonl"]
BATCH = 500


def _reviewed(store: Store) -> Iterator[ReviewItemRow]:
    """Reviewed items in id order, a batch at a time (an export of 100,000 items must not sit in memory)."""
    last = 0
    while True:
        with store.session() as s:
            rows = list(s.scalars(
                select(ReviewItemRow).where(ReviewItemRow.status == STATUS_REVIEWED, ReviewItemRow.id > last)
                .options(selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))
                .order_by(ReviewItemRow.id).limit(BATCH)))
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def _boxes(row: ReviewItemRow, review: ReviewRow) -> list[dict[str, Any]]:
    final, relabelled = review.final_verdict, review.decision == "relabel"
    if final == GOOD:
        return []
    if review.boxes is not None:
        return [{"bbox": [b["x"], b["y"], b["w"], b["h"]], "class": b["class"], "model_class": None, "peak": None,
                 "caption": None, "source": "operator"} for b in review.boxes]
    return [{"bbox": [r.x, r.y, r.w, r.h], "class": final if relabelled else r.defect_class,
             "model_class": r.defect_class, "peak": r.peak, "caption": r.caption, "source": "model"}
            for r in row.regions]


def item_record(row: ReviewItemRow) -> dict[str, Any]:
    """One reviewed item as a JSON-able record (the JSONL line; COCO is built from these)."""
    review = row.reviews[-1]
    return {
        "frame_id": row.frame_id, "line_id": row.line_id, "source_id": row.source_id, "seq": row.seq,
        "image": f"images/{row.image_path}", "width": row.width, "height": row.height,
        "captured_wall": row.captured_wall, "label": review.final_verdict, "decision": review.decision,
        "reviewer": review.reviewer, "reviewed_wall": review.created_wall, "comment": review.comment,
        "model_verdict": row.verdict,
        "class_scores": row.class_scores, "uncertainty": row.uncertainty, "reason": row.reason,
        "anomaly_score": row.anomaly_score, "pack_version": row.pack_version,
        "profile_version": row.profile_version,
        "boxes": _boxes(row, review),
    }


def coco(records: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({box["class"] for rec in records for box in rec["boxes"]}
                   | {rec["label"] for rec in records if rec["label"] != GOOD})
    category = {name: i for i, name in enumerate(names, 1)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, rec in enumerate(records, 1):
        images.append({"id": image_id, "file_name": rec["image"], "width": rec["width"], "height": rec["height"],
                       "frame_id": rec["frame_id"], "line_id": rec["line_id"], "label": rec["label"],
                       "model_verdict": rec["model_verdict"], "decision": rec["decision"],
                       "reviewer": rec["reviewer"], "comment": rec["comment"]})
        for box in rec["boxes"]:
            x, y, w, h = box["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category[box["class"]], "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": 0, "source": box["source"],
                                **({"score": box["peak"]} if box["peak"] is not None else {})})
    return {"info": {"description": "lineside station export: reviewed items", "date_created":
                     time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "licenses": [],
            "categories": [{"id": i, "name": n, "supercategory": "defect"} for n, i in category.items()],
            "images": images, "annotations": annotations}


def write_zip(store: Store, fmt: Format, dest: Path) -> int:
    """Write the export to ``dest``; returns the number of items. An item whose image file is missing is
    exported without its image and logged (the label is still worth having)."""
    records: list[dict[str, Any]] = []
    count = 0
    # JSON lines go to a temporary file first: a zip cannot take the images while another member is open.
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryFile() as jsonl:
        for row in _reviewed(store):
            rec = item_record(row)
            count += 1
            try:
                path = imagefiles.resolve(store.storage_dir, row.image_path)
                zf.write(path, rec["image"], compress_type=zipfile.ZIP_STORED)
            except (OSError, imagefiles.ImagePathError) as exc:
                log.error("export: image of item %d (%s) not exported: %s", row.id, row.frame_id, exc)
                rec["image"] = None
            if fmt == "jsonl":
                jsonl.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
            else:
                records.append(rec)
        if fmt == "jsonl":
            jsonl.seek(0)
            with zf.open("items.jsonl", "w") as member:
                shutil.copyfileobj(jsonl, member)
        else:
            zf.writestr("annotations.json", json.dumps(coco([r for r in records if r["image"]]), indent=1))
    return count


def export_zip(store: Store, fmt: Format) -> Path:
    """The export as a temporary zip file (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix=f"lineside-export-{fmt}-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        write_zip(store, fmt, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
