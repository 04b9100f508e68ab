"""The review bench's line: a busy station (``filler`` queued items) and on top of it a routed stream with runs of
look-alike frames, as the real station stores them (images, embeddings from the starter pack, groups).

The stream is real textile frames (conformal-clip-data, MIT) with what an operator would answer:

- frames with a global defect (a texture change; they look alike), which the model calls ``texture``, a few of
  which are really good (``ODD_EVERY``): the operator takes those out of their group;
- frames with a local defect the model calls ``spot`` (right);
- good frames the model calls ``spot`` (wrong: the operator rejects).

Their uncertainties sit above the filler's, so the stream is the head of the queue however large the queue is.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import text

from edge.datasets import TextileSplit, textile_split
from edge.station.store import GroupingPolicy, Store
from edge.transport.schema import ReviewItem, embedding_b64

CLASSES = {"good": 0.3, "spot": 0.3, "texture": 0.4}  # relabel keys: 1 good, 2 spot, 3 texture
ODD_EVERY = 9  # every 9th global-defect frame is really a good part
LINE = "bench-line"
FILLER_IMAGE = "filler/filler.jpg"  # every filler item shows this one real frame


@dataclass(frozen=True)
class StreamFrame:
    frame_id: str
    verdict: str  # the model's
    truth: str  # what the operator answers


def stream(frames: int, pack_dir: Path, seed: int = 0) -> list[tuple[ReviewItem, bytes, StreamFrame]]:
    """``frames`` routed frames: half global-defect runs, a quarter local defects, a quarter good parts, shuffled in
    runs as a line makes them (a stretch of one kind, then another); each with its embedding."""
    from edge.vlm.pack import load_pack
    from edge.vlm.runtime import ImageEncoder

    splits: tuple[TextileSplit, ...] = ("calib", "test")
    files = {label: [p for split in splits for p, lab in textile_split(split) if lab == label]
             for label in ("global", "local", "nominal")}
    rng = np.random.default_rng(seed)
    kinds = ["global"] * (frames // 2) + ["local"] * (frames // 4)
    kinds += ["nominal"] * (frames - len(kinds))
    runs: list[list[str]] = []
    i = 0
    while i < len(kinds):  # runs of 3 to 12 frames of one kind, as a line makes them
        n = int(rng.integers(3, 13))
        runs.append(kinds[i:i + n])
        i += n
    order = [kind for run in (runs[j] for j in rng.permutation(len(runs))) for kind in run]
    encoder = ImageEncoder(load_pack(pack_dir), "cpu")
    used = {k: 0 for k in files}
    now = time.time()
    out = []
    for seq, kind in enumerate(order, start=1):
        path = files[kind][used[kind] % len(files[kind])]
        used[kind] += 1
        image = cv2.imread(str(path))
        if image is None:
            raise RuntimeError(f"review bench: cannot read {path}")
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        verdict = "texture" if kind == "global" else "spot"
        truth = {"global": "good" if used[kind] % ODD_EVERY == 0 else "texture", "local": "spot",
                 "nominal": "good"}[kind]
        item = ReviewItem(
            frame_id=f"{LINE}:cam0:b1:{seq}", line_id=LINE, source_id="cam0", seq=seq, captured_wall=now - 600 + seq,
            decided_wall=now - 600 + seq, width=image.shape[1], height=image.shape[0], verdict=verdict,
            class_scores=CLASSES, anomaly_score=1.0, anomaly_threshold=0.8,
            uncertainty=round(0.99 - 0.08 * seq / len(order), 4), pack_version="starter",
            profile_version=f"{LINE}/v1", embedding=embedding_b64(encoder.encode(image).global_))
        out.append((item, jpeg.tobytes(), StreamFrame(item.frame_id, verdict, truth)))
    return out


def fill_station(db: Path, images: Path, filler: int) -> None:
    """A station database with ``filler`` queued items below the stream (edge.bench.station.fill_queue; their
    uncertainty scaled under 0.9, their image one shared real frame)."""
    from edge.bench.station import fill_queue

    store = Store(f"sqlite:///{db}", images)
    try:
        fill_queue(store, filler)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE review_items SET uncertainty = uncertainty * 0.9, image_path = :image"),
                         {"image": FILLER_IMAGE})
    finally:
        store.close()


def station_copy(template: Path, folder: Path, items: list[tuple[ReviewItem, bytes, StreamFrame]],
                 grouping: GroupingPolicy) -> tuple[str, Path]:
    """A copy of the filled database in ``folder`` with the stream stored into it by the station's own ingest,
    grouped by ``grouping`` (distance 0: every frame alone). Returns (database URL, image folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    db, images = folder / "station.db", folder / "images"
    shutil.copyfile(template, db)
    (images / FILLER_IMAGE).parent.mkdir(parents=True, exist_ok=True)
    (images / FILLER_IMAGE).write_bytes(items[-1][1])
    store = Store(f"sqlite:///{db}", images, grouping)
    try:
        store.ingest.add_items([(item, jpeg) for item, jpeg, _ in items])
    finally:
        store.close()
    return f"sqlite:///{db}", images
