"""Where the line's regions come from: the anomaly map as calibrated, or the line model's learnt defect map — chosen
on synthetic defects pasted on the line's good images (and the operator's boxes, after reviews) that the line model
did not learn from.

The pasted defects and boxed frames are split in two by the image they are on: a line model fit on one half (and
the clean good images) cuts regions on the other, and so does the anomaly map; the source whose boxes match the
held-out defects better (F1 at IoU ≥ 0.3, by at least `MIN_GAIN`; the anomaly map on a tie), with its cut fitted on
that half (edge.fit.regions), is the line's. The line model kept is then fit on all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.fit.line_model import LineModel, LineSample, patch_logits, patch_targets, train_line_model
from edge.fit.regions import PastedDefect, fit_region_cut, map_thresholds
from edge.profile.line_profile import RegionCut

LINE_LEVELS = (0.0, -1.0, 1.0, 2.0, 3.0)  # the line model's logit (0: even odds), the first the default
MIN_GAIN = 0.02
MIN_PASTED = 8


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
    line_cut = fit_region_cut(as_line(held_truth, patch_logits(half, [samples[i] for i in second])), LINE_LEVELS)
    map_cut = fit_region_cut(held_truth, map_thresholds(map_threshold))
    line_f1, map_f1 = float(line_cut.measured["region_cut_f1"]), float(map_cut.measured["region_cut_f1"])  # type: ignore
    line_overlap = float(line_cut.measured["region_cut_overlap"])  # type: ignore[arg-type]
    map_overlap = float(map_cut.measured["region_cut_overlap"])  # type: ignore[arg-type]
    metrics: dict[str, Any] = {"region_f1_line_model": line_f1, "region_f1_anomaly_map": map_f1,
                               "region_overlap_line_model": line_overlap, "region_overlap_anomaly_map": map_overlap,
                               "pasted_defects": len(pasted), "boxed_frames": len(boxed),
                               "pasted_held_out": len(second)}
    if line_f1 < map_f1 + MIN_GAIN:
        fitted = fit_region_cut(truth, map_thresholds(map_threshold))
        return None, fitted.cut("map"), {**metrics, **fitted.measured, "region_source": "map"}
    model = train_line_model(learnt(range(len(samples))), seed=seed)
    return model, line_cut.cut("line"), {**metrics, **line_cut.measured, "region_source": "line model"}
