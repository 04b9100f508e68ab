"""Where the line's regions come from: the anomaly map as calibrated, or the line model's learnt defect map — chosen
on synthetic defects pasted on the line's good images that the line model did not learn from.

The pasted defects are split in two by the image they were pasted on: a line model fit on one half (and the clean
good images) cuts regions on the other, and so does the anomaly map; the source whose boxes match the held-out
defects better (F1 at IoU ≥ 0.3, by at least `MIN_GAIN`; the anomaly map on a tie), with its cut fitted on that
half (edge.fit.regions), is the line's. The line model kept is then fit on all of them.
"""

from __future__ import annotations

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


def _as_line(pasted: list[PastedDefect], probabilities: np.ndarray) -> list[PastedDefect]:
    return [PastedDefect(p, d.mask, d.width, d.height) for d, p in zip(pasted, probabilities, strict=True)]


def fit_localiser(pasted: list[PastedDefect], clean: list[LineSample], map_threshold: float, seed: int = 0
                  ) -> tuple[LineModel | None, RegionCut, dict[str, Any]]:
    """The line model (None when the anomaly map cuts better, there are too few pasted defects or the pack gives one
    patch grid), how regions are cut, and what was measured."""
    if len(pasted) < MIN_PASTED or any(d.tower is None for d in pasted):
        fitted = fit_region_cut(pasted, map_thresholds(map_threshold)) if pasted else None
        cut = fitted.cut("map") if fitted is not None else RegionCut("map", map_threshold, None)
        why = "few pasted defects" if len(pasted) < MIN_PASTED else "the pack gives one patch grid"
        return None, cut, {**(fitted.measured if fitted else {}), "region_source": f"map ({why})"}
    rng = np.random.default_rng(seed)
    sources = sorted({d.source if d.source >= 0 else i for i, d in enumerate(pasted)})
    held = set(rng.permutation(sources)[::2].tolist())
    first = [d for i, d in enumerate(pasted) if (d.source if d.source >= 0 else i) not in held]
    second = [d for i, d in enumerate(pasted) if (d.source if d.source >= 0 else i) in held]
    half = train_line_model(line_samples(first) + clean, seed=seed)
    line_held = _as_line(second, patch_logits(half, line_samples(second)))
    line_cut = fit_region_cut(line_held, LINE_LEVELS)
    map_cut = fit_region_cut(second, map_thresholds(map_threshold))
    line_f1, map_f1 = float(line_cut.measured["region_cut_f1"]), float(map_cut.measured["region_cut_f1"])  # type: ignore
    metrics: dict[str, Any] = {"region_f1_line_model": line_f1, "region_f1_anomaly_map": map_f1,
                               "pasted_defects": len(pasted), "pasted_held_out": len(second)}
    if line_f1 < map_f1 + MIN_GAIN:
        fitted = fit_region_cut(pasted, map_thresholds(map_threshold))
        return None, fitted.cut("map"), {**metrics, **fitted.measured, "region_source": "map"}
    model = train_line_model(line_samples(pasted) + clean, seed=seed)
    return model, line_cut.cut("line"), {**metrics, **line_cut.measured, "region_source": "line model"}
