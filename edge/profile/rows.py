"""The labelled frame rows a profile version was fit on (`rows.npz`), which `lineside train` adds to.

One labelled frame is one row: the classifier head's feature vector (`edge.grounding.classifier.frame_features`: g,
the pooled patch embedding per stride, and the anomaly map's max / top-2 % / mean and the global zero-shot score),
its label (1 = defect), the defect class when someone named it, and where it came from (`calibrate`, or the station
frame id of a review).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class LabelledRows:
    features: np.ndarray  # [N, d] float32 frame_features rows
    labels: np.ndarray  # [N] 1 = defect
    classes: list[str] = field(default_factory=list)  # operator's defect class ("" = not named)
    sources: list[str] = field(default_factory=list)  # "review:<frame id>"; "" for calibration images

    def __post_init__(self) -> None:
        n = self.labels.size
        self.classes = self.classes or [""] * n
        self.sources = self.sources or [""] * n
        if self.features.shape[0] != n or len(self.classes) != n or len(self.sources) != n:
            raise ValueError("labelled rows: features, labels, classes and sources differ in length")

    def __len__(self) -> int:
        return int(self.labels.size)

    def extend(self, other: LabelledRows) -> LabelledRows:
        """These rows plus `other`'s, skipping sources already present (a frame reviewed twice counts once, with
        its latest label); none of `other` (a training with nothing new to read): these rows."""
        if not len(other):
            return self
        latest = {s: i for i, s in enumerate(other.sources) if s}
        keep = [i for i, s in enumerate(self.sources) if not s or s not in latest]
        return LabelledRows(np.concatenate([self.features[keep], other.features]),
                            np.concatenate([self.labels[keep], other.labels]),
                            [self.classes[i] for i in keep] + other.classes,
                            [self.sources[i] for i in keep] + other.sources)

    def only(self, keep: np.ndarray) -> LabelledRows:
        """The rows where `keep` (a boolean mask) holds, in their order."""
        index = np.flatnonzero(keep)
        return LabelledRows(self.features[index], self.labels[index], [self.classes[i] for i in index],
                            [self.sources[i] for i in index])

    def save(self, path: Path) -> None:
        np.savez_compressed(path, features=self.features.astype(np.float16), labels=self.labels.astype(np.int8),
                            classes=np.array(self.classes, dtype=str), sources=np.array(self.sources, dtype=str))

    @classmethod
    def load(cls, path: Path) -> LabelledRows:
        with np.load(path) as npz:
            return cls(npz["features"].astype(np.float32), npz["labels"].astype(np.int64),
                       [str(c) for c in npz["classes"]], [str(s) for s in npz["sources"]])
