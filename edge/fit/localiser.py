"""Where the line's regions come from: the anomaly map as calibrated, or the line model's learnt defect map — chosen
on synthetic defects pasted on the line's good images (and the operator's boxes, after reviews) that the line model
did not learn from.

The pasted defects and boxed frames are split in two by the image they are on: a line model fit on one half (and
the clean good images) cuts regions on the other, and so does the anomaly map; the source whose boxes match the
held-out defects better (F1 at IoU ≥ 0.3, by at least `MIN_GAIN`; the anomaly map on a tie), with its cut fitted on
that half (edge.fit.regions), is the line's. The line model kept is then fit on all of them.

The line model's map is its logit plus a multiple of the anomaly map (RegionCut.map_weight), the multiple whose map
ranks the pixels of held-out defects *of a kind the model did not learn* best (`choose_map_weight`): each synthetic
kind scored by a model fit on the others. The model learns the defects it was shown and is sure of them, and on a
defect unlike those (another shape, another contrast) its logit stays far below even odds and flat, where the
anomaly map still stands out: measured on the evaluation's pasted ELPV defects (seed 0, the line model's logits of
that run; one-off script), pixel AUROC 0.936 with the logit alone, 0.959 with the anomaly map alone, 0.973 with the
logit plus 4 × the map; on textile, whose line model finds those defects, 0.996 alone and 0.995 with 4 × the map.
On held-out defects of the kinds it learnt, both lines' line models rank the pixels best alone (0.994), so the
multiple is chosen across kinds, not within them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from edge.fit.line_model import EPOCHS, LineModel, LineSample, patch_logits, patch_targets, train_line_model
from edge.fit.regions import PastedDefect, fit_region_cut, map_thresholds
from edge.profile.line_profile import RegionCut, line_map_with_anomaly
from edge.stats import auroc

LINE_LEVELS = (0.0, -1.0, 1.0, 2.0, 3.0)  # the line model's logit (0: even odds), the first the default
MIN_GAIN = 0.02
MIN_PASTED = 8
MAP_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)  # the anomaly map's multiple added to the line model's logit
MAP_WEIGHT_TIE = 0.001  # pixel AUROC within this of the best: the smaller multiple
KIND_EPOCHS = EPOCHS // 2  # the models that score each kind they did not learn only choose the multiple
PIXEL_STEP = 2  # every n-th frame pixel along each axis scores a map (as the evaluation's pixel AUROC does)


def pixel_auroc(maps: np.ndarray, defects: Sequence[PastedDefect]) -> float:
    """AUROC of the maps' values (each upsampled to its frame) at the defects' pixels against the rest."""
    truth, scores = [], []
    for m, d in zip(maps, defects, strict=True):
        up = cv2.resize(np.asarray(m, np.float32), (d.width, d.height), interpolation=cv2.INTER_LINEAR)
        scores.append(up[::PIXEL_STEP, ::PIXEL_STEP].ravel())
        truth.append(d.mask[::PIXEL_STEP, ::PIXEL_STEP].ravel())
    return auroc(np.concatenate(truth), np.concatenate(scores))


def choose_map_weight(logits: np.ndarray, defects: Sequence[PastedDefect], level: float
                      ) -> tuple[float, dict[str, float]]:
    """The multiple of the anomaly map (above `level`) added to the line model's logits (one map per defect) whose
    sum ranks the defects' pixels best (`pixel_auroc`; within MAP_WEIGHT_TIE of the best, the smaller multiple),
    and the pixel AUROC of each multiple of MAP_WEIGHTS."""
    maps = np.stack([d.anomaly_map for d in defects])
    table = {f"{w:g}": round(pixel_auroc(line_map_with_anomaly(logits, maps, w, level), defects), 4)
             for w in MAP_WEIGHTS}
    measured = [v for v in table.values() if np.isfinite(v)]
    if not measured:  # no defect pixel left on the sampled grid (defects smaller than PIXEL_STEP): the logit alone
        return 0.0, table
    return next(w for w in MAP_WEIGHTS if table[f"{w:g}"] >= max(measured) - MAP_WEIGHT_TIE), table


def line_samples(pasted: list[PastedDefect]) -> list[LineSample]:
    """The line model's examples of pasted defects: per-patch targets from their masks."""
    out = []
    for d in pasted:
        assert d.tower is not None
        target, weight = patch_targets(d.mask, d.anomaly_map.shape)
        out.append(LineSample(d.tower[0], d.tower[1], d.anomaly_map, target, weight))
    return out


def as_line(pasted: list[PastedDefect], logits: np.ndarray) -> list[PastedDefect]:
    """The defects with the line model's map (`logits`, one per defect) in place of the anomaly map, to fit the
    line model's cut on."""
    return [PastedDefect(p, d.mask, d.width, d.height, image=d.image) for d, p in zip(pasted, logits, strict=True)]


def _map_weight(truth: list[PastedDefect], samples: list[LineSample], first: list[int], second: list[int],
                learnt: Callable[[Sequence[int]], list[LineSample]], held_logits: np.ndarray, level: float,
                seed: int) -> tuple[float, dict[str, float]]:
    """choose_map_weight on defects unlike those the line model learnt, as a line's real defects are: each
    synthetic kind of the held-out half scored by a model fit on the first half's other kinds. With fewer than two
    kinds (the operator's boxes alone), on the held-out half as the half model scores it."""
    kinds = sorted({truth[i].kind for i in second if truth[i].kind})
    if len(kinds) < 2:
        return choose_map_weight(held_logits, [truth[i] for i in second], level)
    logits, defects = [], []
    for kind in kinds:
        model = train_line_model(learnt([i for i in first if truth[i].kind != kind]), seed=seed, epochs=KIND_EPOCHS)
        unlike = [i for i in second if truth[i].kind == kind]
        logits.append(patch_logits(model, [samples[i] for i in unlike]))
        defects += [truth[i] for i in unlike]
    return choose_map_weight(np.concatenate(logits), defects, level)


def fit_localiser(pasted: list[PastedDefect], clean: list[LineSample], map_threshold: float, seed: int = 0,
                  boxed: Sequence[tuple[LineSample, PastedDefect]] = (), box_repeat: int = 1
                  ) -> tuple[LineModel | None, RegionCut, dict[str, Any]]:
    """The line model (None when the anomaly map cuts better, there are too few defects or the pack gives one patch
    grid), how regions are cut, and what was measured. `boxed`: frames with the operator's boxes (the line model's
    sample, and the boxes as the defect to match), each learnt `box_repeat` times."""
    truth = pasted + [d for _, d in boxed]
    if len(truth) < MIN_PASTED or any(d.tower is None for d in truth):
        fitted = fit_region_cut(truth, map_thresholds(map_threshold)) if truth else None
        cut = fitted.cut("map") if fitted is not None else RegionCut("map", map_threshold, None)
        why = "few pasted defects" if len(truth) < MIN_PASTED else "the pack gives one patch grid"
        return None, cut, {**(fitted.measured if fitted else {}), "region_source": f"map ({why})"}
    samples = line_samples(pasted) + [s for s, _ in boxed]
    repeats = [1] * len(pasted) + [box_repeat] * len(boxed)
    # defects of one image stay on one side; a boxed frame is an image of its own
    keys = [d.source if d.source >= 0 else i for i, d in enumerate(pasted)]
    keys += [max(keys, default=-1) + 1 + j for j in range(len(boxed))]
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(sorted(set(keys)))[::2].tolist())
    first = [i for i, k in enumerate(keys) if k not in held]
    second = [i for i, k in enumerate(keys) if k in held]

    def learnt(indices: Sequence[int]) -> list[LineSample]:
        return [samples[i] for i in indices for _ in range(repeats[i])] + clean

    half = train_line_model(learnt(first), seed=seed)
    held_truth = [truth[i] for i in second]
    held_logits = patch_logits(half, [samples[i] for i in second])
    weight, by_weight = _map_weight(truth, samples, first, second, learnt, held_logits, map_threshold, seed)
    line_maps = line_map_with_anomaly(held_logits, np.stack([d.anomaly_map for d in held_truth]), weight,
                                      map_threshold)
    line_cut = fit_region_cut(as_line(held_truth, line_maps), LINE_LEVELS)
    map_cut = fit_region_cut(held_truth, map_thresholds(map_threshold))
    line_f1, map_f1 = float(line_cut.measured["region_cut_f1"]), float(map_cut.measured["region_cut_f1"])  # type: ignore
    line_overlap = float(line_cut.measured["region_cut_overlap"])  # type: ignore[arg-type]
    map_overlap = float(map_cut.measured["region_cut_overlap"])  # type: ignore[arg-type]
    metrics: dict[str, Any] = {"region_f1_line_model": line_f1, "region_f1_anomaly_map": map_f1,
                               "region_overlap_line_model": line_overlap, "region_overlap_anomaly_map": map_overlap,
                               "pasted_defects": len(pasted), "boxed_frames": len(boxed),
                               "pasted_held_out": len(second), "region_map_weight": weight,
                               "region_pixel_auroc_by_map_weight": by_weight}
    if line_f1 < map_f1 + MIN_GAIN:
        fitted = fit_region_cut(truth, map_thresholds(map_threshold))
        return None, fitted.cut("map"), {**metrics, **fitted.measured, "region_source": "map"}
    model = train_line_model(learnt(range(len(samples))), seed=seed)
    cut = replace(line_cut.cut("line"), map_weight=weight, map_level=map_threshold)
    return model, cut, {**metrics, **line_cut.measured, "region_source": "line model"}
