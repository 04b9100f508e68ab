"""`lineside train --line L`: the operators' answers make the line surer.

Takes the line's reviewed frames as the station exports them (edge.transport.reviewed; `lineside train` reads them
with edge.station.training_export), encodes each reviewed image once with the running pack, turns it into a
labelled row with the current profile's memory bank and statistics (exactly the row `lineside calibrate` makes for
its images), adds the rows to the ones the current version was fit on (a frame reviewed again replaces its earlier
row) and refits the classifier head, the failure predictor, the routing threshold and the OoD detector
(edge.fit.refit). The result is saved as the next version and made CURRENT: a running daemon picks it up between
frames (it watches CURRENT; SIGHUP does the same at once).

The memory bank and the patch statistics stay as calibrated: changing them would change every stored row's
numbers, so good frames operators confirm are not added to the bank here — recalibrating with them as `--good`
images does that.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import ImageLimits
from edge.findings import GOOD
from edge.fit.frame_graph import frame_graph_files
from edge.fit.refit import RoutingSpec, refit
from edge.images import ImageError, read_image
from edge.inspect.inspector import Inspector
from edge.profile.line_profile import LineProfile, ProfileError
from edge.profile.rows import LabelledRows
from edge.profile.versions import load_profile, save_profile
from edge.progress import Progress, silent
from edge.transport.reviewed import ReviewedFrame
from edge.vlm.pack import ModelPack

log = logging.getLogger(__name__)



def rows_from_reviews(inspector: Inspector, reviewed: Sequence[ReviewedFrame], progress: Progress = silent,
                      limits: ImageLimits | None = None) -> tuple[LabelledRows, list[str]]:
    """Rows for the reviewed frames; unreadable images are skipped and named in the second value."""
    features, labels, classes, sources, skipped = [], [], [], [], []
    for item in progress(list(reviewed), "reviewed frames"):
        try:
            bgr = read_image(item.image_path, limits)
        except ImageError as exc:
            log.error("%s (skipped)", exc)
            skipped.append(str(item.image_path))
            continue
        features.append(inspector.frame_row(inspector.image_encoder.encode(bgr)))
        is_defect = item.final_verdict != GOOD
        labels.append(int(is_defect))
        classes.append(item.final_verdict if is_defect else "")
        sources.append(f"review:{item.frame_id}")
    if not features:
        return LabelledRows(np.zeros((0, 0), np.float32), np.zeros(0, np.int64)), skipped
    return LabelledRows(np.stack(features), np.array(labels, np.int64), classes, sources), skipped


def train_profile(pack: ModelPack, profile_dir: Path, reviewed: Sequence[ReviewedFrame],
                  routing: RoutingSpec | None = None, provider: str = "auto", seed: int = 0,
                  progress: Progress = silent, limits: ImageLimits | None = None) -> LineProfile:
    """Fit and save the next profile version from the current one's rows plus `reviewed` (their images read
    within `limits`); returns it."""
    started = time.monotonic()
    current = load_profile(profile_dir, pack_version=pack.version, with_rows=True)
    if current.rows is None:
        raise ProfileError(f"line profile {profile_dir}/{current.version} keeps no labelled rows (made before "
                           "`lineside train` existed): run `lineside calibrate` once more, then train")
    if not reviewed:
        raise ProfileError(f"line {current.line_id}: the station has no reviewed frames for this line yet")
    inspector = Inspector(pack, current, provider)
    new_rows, skipped = rows_from_reviews(inspector, reviewed, progress, limits)
    if not len(new_rows):
        raise ProfileError(f"line {current.line_id}: none of the {len(reviewed)} reviewed images could be read")
    profile = copy.copy(current)
    profile.metrics = {}
    rows = current.rows.extend(new_rows)
    previous = current.routing
    fitted = refit(profile, rows, inspector.text_bank, pack.logit_scale, pack.embedding_dim,
                   routing or _routing_of(previous), seed=seed)
    profile.rows = rows
    assert current.graph is not None  # the Inspector above refuses a version without one
    examples = inspector.image_encoder.embeddings(current.graph.inputs())
    profile.graph = frame_graph_files(profile, pack, inspector.text_bank, examples)
    profile.created_wall = time.time()
    profile.metrics = {**fitted, "trained_from": current.version, "reviewed_frames": len(new_rows),
                       "unreadable_images": skipped, "seconds": round(time.monotonic() - started, 1)}
    save_profile(profile, profile_dir)
    log.info("line %s: profile %s trained from %s + %d reviewed frames (%d rows)", profile.line_id,
             profile.version, current.version, len(new_rows), len(rows))
    return profile


def _routing_of(previous: dict[str, Any] | None) -> RoutingSpec:
    if not previous:
        return RoutingSpec()
    return RoutingSpec(previous["policy"], float(previous["alpha"]), float(previous["delta"]),
                       float(previous["budget"]))
