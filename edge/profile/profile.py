"""The line profile: what one product line knows, versioned on disk.

    <profile dir>/CURRENT          name of the version in use (replaced atomically)
    <profile dir>/v0001/profile.json   vocabulary, thresholds, good-score statistics, provenance
    <profile dir>/v0001/bank.npz       good-reference memory bank, one float16 array per patch stride
    <profile dir>/v0001/head.npz       classifier head (only when calibrated with labelled defects)
    <profile dir>/v0001/failure.npz    learned failure predictor (edge.uncertainty.failure), when there were errors
    <profile dir>/v0001/neighbours.npz labelled frames as neighbours (the failure predictor's neighbourhood inputs)
    <profile dir>/v0001/ood.npz        OoD references and threshold
    <profile dir>/v0001/rows.npz       the labelled frame rows everything above was fit on (`lineside train` adds to)

The frame verdict: with a head in use, p(defect) from the head against its threshold; without one, the frame score — the
weighted mean of the anomaly map's maximum and the global zero-shot score, each in held-out good-frame standard
deviations (`frame_stats`, `frame_weights`) — against `frame_threshold`. Profiles written before these fields
existed carry none of them and decide on the map's maximum against `anomaly_threshold`, as they were fit.
`anomaly_threshold` is always the *map* threshold that cuts regions.

A profile is fit with one model pack (its embeddings live in that pack's space); loading it with another pack is
refused with a message that says to calibrate again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.grounding.head import LinearHead
from edge.uncertainty.failure import FailurePredictor, NeighbourIndex, OodDetector
from edge.vlm.vocabulary import Vocabulary, parse_vocabulary


class ProfileError(RuntimeError):
    """A line profile that cannot be used; one line naming the profile and the problem."""


@dataclass
class LineProfile:
    line_id: str
    version: str
    pack_version: str
    vocabulary: Vocabulary
    bank: dict[int, np.ndarray]  # stride -> [M, D] float32 unit-norm good patch embeddings
    # per stride, per mode ("few", "zero"): mean and std of patch scores over good images, to put them on one scale
    patch_stats: dict[int, dict[str, tuple[float, float]]]
    anomaly_threshold: float  # frame score above this = defect
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
    rows: Any = None  # edge.profile.fit.LabelledRows the head / predictor were fit on (kept for `lineside train`)
    # share of defective parts the line makes, when the line engineer knows it: decision thresholds are then the
    # ones with the best accuracy at that rate; None = balanced accuracy (the labelled set's mix says nothing)
    defect_rate: float | None = None

    def frame_score(self, map_max: float, global_score: float) -> tuple[float, float, float]:
        """(score, threshold, scale) of the frame without the head."""
        if not self.frame_stats or self.frame_threshold is None:
            return map_max, self.anomaly_threshold, self.anomaly_scale
        parts = {"map": map_max, "global": global_score}
        total = weight_sum = 0.0
        for name, weight in self.frame_weights.items():
            if weight > 0 and name in self.frame_stats:
                mean, std = self.frame_stats[name]
                total += weight * (parts[name] - mean) / max(std, 1e-6)
                weight_sum += weight
        return total / max(weight_sum, 1e-9), self.frame_threshold, self.frame_scale or 1.0

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
            "rows": None if self.rows is None else {"file": "rows.npz", "n": len(self.rows)},
        }


def _next_version(directory: Path) -> str:
    existing = [int(p.name[1:]) for p in directory.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir()]
    return f"v{max(existing, default=0) + 1:04d}"


def save_profile(profile: LineProfile, directory: Path) -> str:
    """Write `profile` as the next version under `directory` and make it CURRENT; returns the version."""
    directory.mkdir(parents=True, exist_ok=True)
    profile.version = _next_version(directory)
    staging = directory / f".{profile.version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / "profile.json").write_text(json.dumps(profile.to_json(), indent=2))
    arrays: dict[str, Any] = {f"s{s}": b.astype(np.float16) for s, b in profile.bank.items()}
    np.savez(staging / "bank.npz", **arrays)
    if profile.head is not None:
        profile.head.save(staging / "head.npz")
    if profile.failure is not None:
        profile.failure.save(staging / "failure.npz")
    if profile.neighbours is not None:
        profile.neighbours.save(staging / "neighbours.npz")
    if profile.ood is not None:
        profile.ood.save(staging / "ood.npz")
    if profile.rows is not None:
        profile.rows.save(staging / "rows.npz")
    os.replace(staging, directory / profile.version)
    tmp = directory / ".CURRENT.tmp"
    tmp.write_text(profile.version + "\n")
    os.replace(tmp, directory / "CURRENT")
    return profile.version


def current_version(directory: Path) -> str | None:
    try:
        return (directory / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def load_profile(directory: Path, pack_version: str | None = None, with_rows: bool = False) -> LineProfile:
    """Load the CURRENT version; refuse one fit with another pack than `pack_version`. The labelled rows (only
    `lineside train` needs them) are read with `with_rows`."""
    directory = Path(directory)
    version = current_version(directory)
    if version is None:
        raise ProfileError(f"line profile {directory}: no profile yet — run `lineside calibrate --good DIR` first")
    vdir = directory / version
    try:
        data = json.loads((vdir / "profile.json").read_text())
        with np.load(vdir / "bank.npz") as npz:
            bank = {int(k[1:]): npz[k].astype(np.float32) for k in npz.files}
        head = LinearHead.load(vdir / "head.npz") if data.get("head") else None
        failure = FailurePredictor.load(vdir / "failure.npz") if data.get("failure") else None
        neighbours = NeighbourIndex.load(vdir / "neighbours.npz") if data.get("neighbours") else None
        ood = OodDetector.load(vdir / "ood.npz") if data.get("ood") else None
        rows = None
        if with_rows and data.get("rows"):
            from edge.profile.fit import LabelledRows  # fit imports this module

            rows = LabelledRows.load(vdir / "rows.npz")
    except (OSError, ValueError, KeyError) as exc:
        raise ProfileError(f"line profile {vdir}: unreadable: {exc}") from None
    if pack_version is not None and data["pack_version"] != pack_version:
        raise ProfileError(
            f"line profile {vdir} was fit with model pack {data['pack_version']} but the daemon runs "
            f"{pack_version}: run `lineside calibrate` again for this pack")
    return LineProfile(
        line_id=data["line_id"], version=data["version"], pack_version=data["pack_version"],
        vocabulary=parse_vocabulary(data["vocabulary"], str(vdir / "profile.json")), bank=bank,
        patch_stats={int(s): {m: (float(v[0]), float(v[1])) for m, v in st.items()}
                     for s, st in data["patch_stats"].items()},
        anomaly_threshold=float(data["anomaly_threshold"]), anomaly_scale=float(data["anomaly_scale"]),
        weights=dict(data.get("weights", {"few": 0.5, "zero": 0.5})), metrics=dict(data.get("metrics", {})),
        created_wall=float(data.get("created_wall", 0.0)),
        frame_stats={k: (float(v[0]), float(v[1])) for k, v in (data.get("frame_stats") or {}).items()},
        frame_weights={k: float(v) for k, v in (data.get("frame_weights") or {}).items()},
        frame_threshold=None if data.get("frame_threshold") is None else float(data["frame_threshold"]),
        frame_scale=None if data.get("frame_scale") is None else float(data["frame_scale"]),
        head=head, use_head=bool((data.get("head") or {}).get("in_use", True)),
        failure=failure, neighbours=neighbours, ood=ood, routing=data.get("routing"), rows=rows,
        defect_rate=None if data.get("defect_rate") is None else float(data["defect_rate"]),
    )
