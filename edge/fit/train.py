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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import ImageLimits
from edge.findings import GOOD
from edge.fit.frame_graph import frame_graph_files
from edge.fit.line_model import LineModel, LineSample, box_targets, patch_logits, tower_grids, train_line_model
from edge.fit.localiser import LINE_LEVELS, MIN_PASTED, as_line, fit_localiser, line_samples
from edge.fit.refit import RoutingSpec, refit, routing_of
from edge.fit.regions import PastedDefect, fit_region_cut
from edge.fit.synthetic import FIT_KINDS, fit_defect
from edge.grounding.regions import grey
from edge.images import ImageError, read_image
from edge.inspect.inspector import Inspector
from edge.profile.line_profile import LineProfile, ProfileError
from edge.profile.rows import LabelledRows
from edge.profile.versions import load_profile, save_profile
from edge.progress import Progress, silent
from edge.transport.reviewed import ReviewedFrame
from edge.vlm.pack import ModelPack

log = logging.getLogger(__name__)
MAX_GOOD_FOR_LINE = 60  # reviewed good frames the line model learns from (and gets defects pasted on)
# boxed frames the line model learns from: each is worth BOX_REPEAT pasted defects, so this many already outweigh
# the rest of its examples; and each holds its tower grids, mask and grey image while train runs (~1 MB at 250 px,
# ~11 MB at 5 MP), which months of boxes must not multiply
MAX_BOXED_FOR_LINE = 100
# reviewed frames a version's rows keep, the latest: refitting the head and the failure predictor takes ~40 ms a row
# on 2 cores (6.5 min at 10,000), and a line's reviews grow every day; calibrate's own rows always stay
MAX_REVIEWS_IN_ROWS = 10_000
BOX_REPEAT = 4  # an operator's box is worth several synthetic defects
RETRAIN_EPOCHS = 15



@dataclass
class ReviewedRows:
    """What the reviewed frames give the next version: labelled rows for the head and the failure predictor, and
    examples for the line model — frames with the operator's boxes, and (some of) the frames judged good, with
    their images for pasting synthetic defects on."""

    rows: LabelledRows
    skipped: list[str]
    boxed: list[tuple[LineSample, PastedDefect]] = field(default_factory=list)  # the box as mask, for the cut
    good: list[tuple[np.ndarray, LineSample]] = field(default_factory=list)
    unchanged: int = 0  # reviewed frames already in the current version's rows with the same answer: not read again


def _latest(reviewed: Sequence[ReviewedFrame], wanted: Callable[[ReviewedFrame], bool], most: int) -> set[int]:
    """The positions of the last `most` reviewed frames (the station gives them oldest review first) that are
    `wanted`: what the line looks like now."""
    return set([i for i, item in enumerate(reviewed) if wanted(item)][-most:]) if most > 0 else set()


def _source(item: ReviewedFrame) -> str:
    """The labelled row's source of a reviewed frame (edge.profile.rows)."""
    return f"review:{item.frame_id}"


def _answer(item: ReviewedFrame) -> tuple[int, str]:
    """A reviewed frame's label and class as a labelled row keeps them."""
    return (0, "") if item.final_verdict == GOOD else (1, item.final_verdict)


def rows_from_reviews(inspector: Inspector, reviewed: Sequence[ReviewedFrame], progress: Progress = silent,
                      limits: ImageLimits | None = None, known: Mapping[str, tuple[int, str]] | None = None
                      ) -> ReviewedRows:
    """Rows for the reviewed frames, and line-model examples from the latest of them (at most MAX_BOXED_FOR_LINE
    frames with the operator's boxes and MAX_GOOD_FOR_LINE answered good); unreadable images are skipped and
    named. A frame whose row is `known` (source → label and class, the current version's rows) with the same
    answer is not read again unless the line model learns from it: its row would come out the same, as the bank
    and the patch statistics stay as calibrated — so a training reads what is new, not the station's history."""
    features, labels, classes, sources, skipped = [], [], [], [], []
    boxed: list[tuple[LineSample, PastedDefect]] = []
    good: list[tuple[np.ndarray, LineSample]] = []
    reviewed = list(reviewed)
    for_boxes = _latest(reviewed, lambda r: r.final_verdict != GOOD and bool(r.operator_boxes), MAX_BOXED_FOR_LINE)
    for_good = _latest(reviewed, lambda r: r.final_verdict == GOOD, MAX_GOOD_FOR_LINE)
    known = known or {}
    wanted = [i for i, item in enumerate(reviewed) if i in for_boxes or i in for_good
              or known.get(_source(item)) != _answer(item)]
    for i in progress(wanted, "reviewed frames"):
        item = reviewed[i]
        try:
            bgr = read_image(item.image_path, limits)
        except ImageError as exc:
            log.error("%s (skipped)", exc)
            skipped.append(str(item.image_path))
            continue
        outputs = inspector.image_encoder.run(inspector.image_encoder.preprocess(bgr)[None])
        grounded = inspector.graph.run(outputs)
        features.append(grounded["features"][0])
        is_defect = item.final_verdict != GOOD
        labels.append(int(is_defect))
        classes.append(item.final_verdict if is_defect else "")
        sources.append(_source(item))
        grids = tower_grids(outputs)
        if grids is None:  # a one-stride pack: no line model
            continue
        anomaly_map = grounded["anomaly_map"][0]
        s8, s16 = grids
        if i in for_boxes:
            rects = [(int(b["x"]), int(b["y"]), int(b["w"]), int(b["h"])) for b in item.operator_boxes or []]
            target, weight = box_targets(rects, bgr.shape[1], bgr.shape[0], anomaly_map.shape)
            mask = np.zeros(bgr.shape[:2], bool)
            for x, y, w, h in rects:
                mask[max(0, y):y + h, max(0, x):x + w] = True
            boxed.append((LineSample(s8, s16, anomaly_map, target, weight),
                          PastedDefect(anomaly_map, mask, bgr.shape[1], bgr.shape[0], (s8, s16),
                                       image=grey(bgr))))
        elif i in for_good:
            good.append((bgr, LineSample(s8, s16, anomaly_map, np.zeros_like(anomaly_map),
                                         np.ones_like(anomaly_map))))
    unchanged = len(reviewed) - len(wanted)
    if not features:
        return ReviewedRows(LabelledRows(np.zeros((0, 0), np.float32), np.zeros(0, np.int64)), skipped,
                            unchanged=unchanged)
    return ReviewedRows(LabelledRows(np.stack(features), np.array(labels, np.int64), classes, sources), skipped,
                        boxed, good, unchanged)


def refit_localiser(profile: LineProfile, inspector: Inspector, reviewed: ReviewedRows, seed: int
                    ) -> dict[str, Any]:
    """The line model goes on from the current version's with the operator's boxes (each seen `BOX_REPEAT` times),
    the reviewed good frames and synthetic defects pasted on them; a line without one gets one where its boxes and
    pasted defects say it cuts better than the anomaly map (edge.fit.localiser), and a line that stays with the
    map gets its cut refitted to the boxes and the pasted defects. Unchanged without boxes or good frames to learn
    from; with fewer than MIN_PASTED boxed and pasted defects together, the cut stays as it was fitted on more."""
    if not reviewed.boxed and (profile.line_model is None or not reviewed.good):
        return {}
    rng = np.random.default_rng(seed)
    images = [bgr for bgr, _ in reviewed.good]
    pasted = []
    for i, bgr in enumerate(images):
        kind = FIT_KINDS[i % len(FIT_KINDS)]
        defect = fit_defect(bgr, images[(i + 1) % len(images)], kind, rng)
        outputs = inspector.image_encoder.run(inspector.image_encoder.preprocess(defect.image)[None])
        anomaly_map = inspector.graph.run(outputs)["anomaly_map"][0]
        pasted.append(PastedDefect(anomaly_map, defect.mask, bgr.shape[1], bgr.shape[0], tower_grids(outputs),
                                   image=grey(defect.image), kind=kind))
    good = [sample for _, sample in reviewed.good]
    truth = [d for _, d in reviewed.boxed] + pasted  # the defects a cut is refitted on
    if profile.line_model is not None:
        boxed = [sample for sample, _ in reviewed.boxed]
        model = train_line_model(good + boxed * BOX_REPEAT + line_samples(pasted), seed=seed, epochs=RETRAIN_EPOCHS,
                                 start=LineModel.from_arrays(profile.line_model))
        profile.line_model = model.state_arrays()
        measured: dict[str, Any] = {"line_model": f"retrained from the last version on {len(boxed)} boxed, "
                                                  f"{len(reviewed.good)} good and {len(pasted)} pasted frames"}
        if profile.region_cut is None or profile.region_cut.source != "line" or not reviewed.boxed:
            return measured
        if len(truth) < MIN_PASTED:  # too few to fit on: the cut fitted on more stays
            return {**measured, "region_source": f"line model ({_cut_kept(len(reviewed.boxed), len(pasted))})"}
        # the operator's boxes are where the line's defects are: the cut is fitted to them (and the pasted)
        # on the map the cut reads: the logits plus the anomaly map as calibrate weighed it
        cut = profile.region_cut
        maps = cut.line_region_map(patch_logits(model, line_samples(truth)), np.stack([d.anomaly_map for d in truth]))
        fitted = fit_region_cut(as_line(truth, maps), LINE_LEVELS)
        profile.region_cut = replace(fitted.cut("line"), map_weight=cut.map_weight, map_level=cut.map_level)
        measured.update(fitted.measured)
        return measured
    if len(truth) < MIN_PASTED:  # too few to compare on: calibrate's cut stays
        return {"region_source": f"map ({_cut_kept(len(reviewed.boxed), len(pasted))})"}
    model_or_none, region_cut, found = fit_localiser(pasted, good, profile.anomaly_threshold, seed, reviewed.boxed,
                                                      BOX_REPEAT)
    if model_or_none is not None:
        profile.line_model = model_or_none.state_arrays()
    profile.region_cut = region_cut
    return found


def _latest_rows(rows: LabelledRows, latest: set[str], in_station: set[str]) -> LabelledRows:
    """Calibrate's rows, the rows of the `latest` reviews, and in what room is left of MAX_REVIEWS_IN_ROWS the
    latest rows of reviews the station no longer holds (deleted by its retention: what they taught stays while
    there is room; they cannot be read again). Rows of older reviews still in the station go — and, not being
    among the latest, are not read back in."""
    sources = rows.sources
    keep = np.array([not s or s in latest for s in sources], bool)
    gone = np.flatnonzero([bool(s) and s not in in_station for s in sources])
    room = MAX_REVIEWS_IN_ROWS - sum(1 for s, k in zip(sources, keep, strict=True) if s and k)
    if room > 0:
        keep[gone[-room:]] = True
    return rows.only(keep)


def _cut_kept(boxed: int, pasted: int) -> str:
    """Why a version keeps its region cut: too few defects to refit it on."""
    return (f"its cut kept: {boxed} boxed and {pasted} pasted defect(s) are fewer than the {MIN_PASTED} a cut is "
            "refitted on")


def train_profile(pack: ModelPack, profile_dir: Path, reviewed: Sequence[ReviewedFrame],
                  routing: RoutingSpec | None = None, provider: str = "auto", seed: int = 0,
                  progress: Progress = silent, limits: ImageLimits | None = None,
                  routing_changes: Mapping[str, Any] | None = None) -> LineProfile:
    """Fit and save the next profile version from the current one's rows plus `reviewed` (their images read
    within `limits`); returns it. Routed by `routing`, else by the policy the current version was fit for
    (`routing_of`) with `routing_changes` (policy, alpha, delta, budget) over it."""
    started = time.monotonic()
    current = load_profile(profile_dir, pack_version=pack.version, with_rows=True)
    if current.rows is None:
        raise ProfileError(f"line profile {profile_dir}/{current.version} keeps no labelled rows (made before "
                           "`lineside train` existed): run `lineside calibrate` once more, then train")
    if not reviewed:
        raise ProfileError(f"line {current.line_id}: the station has no reviewed frames for this line yet")
    inspector = Inspector(pack, current, provider, search="float32")  # rows as calibrate makes them: float
    in_station = {_source(item) for item in reviewed}
    reviewed = list(reviewed)[-MAX_REVIEWS_IN_ROWS:]  # the station lists them oldest review first
    known = {s: (int(label), c) for s, label, c in zip(current.rows.sources, current.rows.labels,
                                                        current.rows.classes, strict=True) if s}
    from_reviews = rows_from_reviews(inspector, reviewed, progress, limits, known)
    new_rows, skipped = from_reviews.rows, from_reviews.skipped
    if not len(new_rows) and not from_reviews.unchanged:
        raise ProfileError(f"line {current.line_id}: none of the {len(reviewed)} reviewed images could be read")
    profile = copy.copy(current)
    profile.metrics = {}
    rows = current.rows.extend(new_rows)
    latest = {_source(item) for item in reviewed}
    rows = _latest_rows(rows, latest, in_station)
    left_out = len(in_station - latest)  # reviews in the station too old for this version's rows
    spec = routing or replace(routing_of(current), **dict(routing_changes or {}))
    # a reviewed row is named by its console item, where its answer can be looked at and given again
    items = {_source(item): item.item_id for item in reviewed}
    names = [f"console item {items[s]} ({s})" if s in items else s for s in rows.sources]
    fitted = refit(profile, rows, inspector.text_bank, pack.logit_scale, pack.embedding_dim, spec, seed=seed,
                   row_names=names)
    suspects = [rows.sources[s["row"]] for s in fitted["label_suspects"]]
    fitted["label_suspect_items"] = [items[s] for s in suspects if s in items]
    profile.rows = rows
    fitted.update(refit_localiser(profile, inspector, from_reviews, seed))
    assert current.graph is not None  # the Inspector above refuses a version without one
    examples = inspector.image_encoder.embeddings(current.graph.inputs())
    profile.graph = frame_graph_files(profile, pack, inspector.text_bank, examples)
    profile.created_wall = time.time()
    profile.metrics = {**fitted, "trained_from": current.version, "reviewed_frames": len(new_rows),
                       "reviews_already_in_rows": from_reviews.unchanged,
                       "reviews_left_out": left_out, "unreadable_images": skipped,
                       "seconds": round(time.monotonic() - started, 1)}
    save_profile(profile, profile_dir)
    log.info("line %s: profile %s trained from %s + %d reviewed frames read (%d already in its rows; %d rows)",
             profile.line_id, profile.version, current.version, len(new_rows), from_reviews.unchanged, len(rows))
    return profile
