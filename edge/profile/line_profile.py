"""The line profile: what one product line knows (one version of it; edge.profile.versions writes and reads them).

The frame verdict: with a head in use, p(defect) from the head against its threshold; without one, the frame score — the
weighted mean of the anomaly map's maximum and the global zero-shot score, each in held-out good-frame standard
deviations (`frame_stats`, `frame_weights`) — against `frame_threshold`. Profiles written before these fields
existed carry none of them and decide on the map's maximum against `anomaly_threshold`, as they were fit.
`anomaly_threshold` is always the *map* threshold that cuts regions.

"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.grounding.classifier import LinearHead
from edge.profile.graph import FrameGraphFiles
from edge.profile.rows import LabelledRows
from edge.uncertainty.failure import FailurePredictor, NeighbourIndex, OodDetector
from edge.vlm.vocabulary import Vocabulary

SEARCH_BASIS_FILE = "search_basis.npz"


class ProfileError(RuntimeError):
    """A line profile that cannot be used; one line naming the profile and the problem."""


def line_map_with_anomaly(line_map: np.ndarray, anomaly_map: np.ndarray, weight: float, level: float
                          ) -> np.ndarray:
    """A line model's logits plus `weight` times the anomaly map's excess over `level` (RegionCut.map_weight,
    .map_level); the logits themselves at weight 0."""
    if not weight:
        return line_map
    return line_map + weight * (anomaly_map - level)


@dataclass(frozen=True)
class RegionCut:
    """How the line's regions are cut: from which map (`map`: the anomaly map, in good-image standard deviations;
    `line`: the line model's defect logit), above which level, and whether each is narrowed to the part around its
    peak above that share of the peak — or, with `relative`, at each frame's own level that share of the way down
    from its map's peak to its mean (edge.grounding.regions.defect_regions); with `contrast`, each box is drawn
    around the frame's pixels that stand out from its surroundings by that many robust standard deviations, and
    with `grow` as well the pixels joined to them on their side of the surroundings by more than `grow`
    (edge.grounding.regions.contrast_box). With `map_weight`, the `line` source is the line model's logit plus that
    many times the anomaly map's excess over `map_level` (its calibrated threshold), as `line_region_map` adds them."""

    source: str
    threshold: float
    peak_fraction: float | None
    relative: float | None = None
    contrast: float | None = None
    grow: float | None = None
    map_weight: float = 0.0
    map_level: float = 0.0

    def line_region_map(self, line_map: np.ndarray, anomaly_map: np.ndarray) -> np.ndarray:
        """The map a `line` cut's regions come from, given a frame's line-model logits and anomaly map."""
        return line_map_with_anomaly(line_map, anomaly_map, self.map_weight, self.map_level)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "threshold": self.threshold, "peak_fraction": self.peak_fraction,
                "relative": self.relative, "contrast": self.contrast, "grow": self.grow,
                "map_weight": self.map_weight, "map_level": self.map_level}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionCut:
        if data.get("source") not in ("map", "line"):
            raise ValueError(f"region_cut source {data.get('source')!r} is neither map nor line")
        fraction, relative = data.get("peak_fraction"), data.get("relative")
        if relative is not None and not 0 < float(relative) <= 1:
            raise ValueError(f"region_cut relative {relative!r} is not in (0, 1]")
        contrast = data.get("contrast")  # profiles made before the contrast cut have none
        if contrast is not None and not float(contrast) > 0:
            raise ValueError(f"region_cut contrast {contrast!r} is not positive")
        grow = data.get("grow")  # nor do those made before the parts grew
        if grow is not None and (contrast is None or not 0 < float(grow) < float(contrast)):
            raise ValueError(f"region_cut grow {grow!r} is not between 0 and the contrast {contrast!r}")
        weight = float(data.get("map_weight") or 0.0)  # nor do those made before the map was added to the logit
        level = float(data.get("map_level") or 0.0)
        if not (np.isfinite(weight) and weight >= 0):
            raise ValueError(f"region_cut map_weight {weight!r} is not a finite non-negative number")
        if not np.isfinite(level):
            raise ValueError(f"region_cut map_level {level!r} is not a finite number")
        return cls(str(data["source"]), float(data["threshold"]), None if fraction is None else float(fraction),
                   None if relative is None else float(relative), None if contrast is None else float(contrast),
                   None if grow is None else float(grow), weight, level)


@dataclass
class LineProfile:
    line_id: str
    version: str
    pack_version: str
    vocabulary: Vocabulary
    bank: dict[int, np.ndarray]  # stride -> [M, D] float32 unit-norm good patch embeddings
    # per stride, per mode ("few", "zero"): mean and std of patch scores over good images, to put them on one scale
    patch_stats: dict[int, dict[str, tuple[float, float]]]
    anomaly_threshold: float  # the map level a region must reach (and, for profiles without frame_stats, the frame's)
    anomaly_scale: float  # spread of good frame scores, for the distance-to-threshold term
    weights: dict[str, float] = field(default_factory=lambda: {"few": 0.5, "zero": 0.5})
    metrics: dict[str, Any] = field(default_factory=dict)
    created_wall: float = field(default_factory=time.time)
    frame_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # "map"/"global" -> good mean, std
    frame_weights: dict[str, float] = field(default_factory=dict)
    frame_threshold: float | None = None
    frame_scale: float | None = None
    head: LinearHead | None = None
    use_head: bool = True  # False: the head is kept for the record, the fused frame score decides
    failure: FailurePredictor | None = None  # learned p(decision wrong); None = the baseline uncertainty
    neighbours: NeighbourIndex | None = None  # labelled frames, for the predictor's neighbourhood inputs
    ood: OodDetector | None = None
    # policy ("risk" | "budget"), alpha, delta, budget, threshold on p(wrong), calibration figures
    routing: dict[str, Any] | None = None
    rows: LabelledRows | None = None  # the LabelledRows the head / predictor were fit on (kept for `lineside train`)
    # share of defective parts the line makes, when the line engineer knows it: decision thresholds are then the
    # ones with the best accuracy at that rate; None = balanced accuracy (the labelled set's mix says nothing)
    defect_rate: float | None = None
    # how regions are cut (edge.fit.localiser); None: from the anomaly map at anomaly_threshold, as before
    region_cut: RegionCut | None = None
    # the line model's weights (edge.fit.line_model), kept so that `lineside train` goes on from them; the frame
    # graph carries the same model for the daemon
    line_model: dict[str, np.ndarray] | None = None
    # what the profile computes per frame as an ONNX graph (edge.profile.graph); None only for profiles from before
    graph: FrameGraphFiles | None = None
    # per stride, the subspace the few-shot search runs in (edge.fit.search; [k, D]); a stride without one, and
    # every stride of a profile from before, searches all dimensions
    search_basis: dict[int, np.ndarray] = field(default_factory=dict)
    # the share of the finest stride's patches its few-shot search compares with the bank, those where the next
    # stride's few-shot score is highest (edge.grounding.anomaly.coarse_to_fine); None: every patch
    coarse_share: float | None = None

    def fused_score(self, map_max: float, global_score: float) -> float:
        """The map maximum and the global zero-shot score fused: each in good-frame standard deviations
        (frame_stats), weighted by frame_weights."""
        parts = {"map": map_max, "global": global_score}
        total = weight_sum = 0.0
        for name, weight in self.frame_weights.items():
            if weight > 0 and name in self.frame_stats:
                mean, std = self.frame_stats[name]
                total += weight * (parts[name] - mean) / max(std, 1e-6)
                weight_sum += weight
        return total / max(weight_sum, 1e-9)

    def frame_score(self, map_max: float, global_score: float) -> tuple[float, float, float]:
        """(score, threshold, scale) of the frame without the head; a profile from before the fused score
        (no frame_stats or frame_threshold) scores the map maximum against the anomaly threshold."""
        if not self.frame_stats or self.frame_threshold is None:
            return map_max, self.anomaly_threshold, self.anomaly_scale
        return self.fused_score(map_max, global_score), self.frame_threshold, self.frame_scale or 1.0

    def describe(self) -> str:
        return f"{self.line_id}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id, "version": self.version, "pack_version": self.pack_version,
            "created_wall": self.created_wall, "vocabulary": self.vocabulary.to_dict(),
            "patch_stats": {str(s): {m: list(v) for m, v in st.items()} for s, st in self.patch_stats.items()},
            "anomaly_threshold": self.anomaly_threshold, "anomaly_scale": self.anomaly_scale,
            "weights": self.weights, "metrics": self.metrics,
            "bank_sizes": {str(s): int(b.shape[0]) for s, b in self.bank.items()},
            "search_basis": {"file": SEARCH_BASIS_FILE,
                             "dims": {str(s): int(b.shape[0]) for s, b in self.search_basis.items()}}
            if self.search_basis else None,
            "coarse_share": self.coarse_share,
            "frame_stats": {k: list(v) for k, v in self.frame_stats.items()}, "frame_weights": self.frame_weights,
            "frame_threshold": self.frame_threshold, "frame_scale": self.frame_scale,
            "head": None if self.head is None else {"file": "head.npz", "threshold": self.head.threshold,
                                                    "l2": self.head.l2, "cv_accuracy": self.head.cv_accuracy,
                                                    "in_use": self.use_head},
            "failure": None if self.failure is None else {"file": "failure.npz", **self.failure.info},
            "neighbours": None if self.neighbours is None else {"file": "neighbours.npz",
                                                                "n": int(self.neighbours.labels.size)},
            "ood": None if self.ood is None else {"file": "ood.npz", "threshold": self.ood.threshold,
                                                  "references": int(self.ood.references.shape[0])},
            "routing": self.routing, "defect_rate": self.defect_rate,
            "region_cut": None if self.region_cut is None else self.region_cut.as_dict(),
            "line_model": None if self.line_model is None else {"file": "line_model.npz"},
            "rows": None if self.rows is None else {"file": "rows.npz", "n": len(self.rows)},
        }


