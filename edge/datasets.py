"""Fixed, documented splits of the development data sets (installed by the `datasets` extra).

textile (conformal-clip-data, MIT): 1,000 nominal, 500 local-defect, 500 global-defect images, 250×250. Within each
class, files sorted by name; index i goes to ``train`` if i % 5 in (0, 1, 2), ``calib`` if i % 5 == 3, ``test`` if
i % 5 == 4 (60 / 20 / 20). The starter pack is trained on ``train`` only; the demo streams ``test``.

elpv (elpv-dataset, CC BY-NC-SA 4.0): evaluation and line-setup tests only, never used to build the starter pack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

TextileSplit = Literal["train", "calib", "test"]
TEXTILE_LABELS = ("nominal", "local", "global")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
_SPLIT_OF_REMAINDER = {0: "train", 1: "train", 2: "train", 3: "calib", 4: "test"}


class DatasetMissing(RuntimeError):
    """A data set package is not installed; the message says which extra installs it."""


def textile_root() -> Path:
    try:
        import conformal_clip_data
    except ImportError:
        raise DatasetMissing(
            "the textile data set is not installed: pip install 'lineside[datasets]' (conformal-clip-data)"
        ) from None
    return Path(conformal_clip_data.textile_simulated_root())


def textile_split(split: TextileSplit, labels: tuple[str, ...] = TEXTILE_LABELS) -> list[tuple[Path, str]]:
    """(path, label) pairs of one split; label is 'nominal', 'local' or 'global'."""
    root = textile_root()
    out: list[tuple[Path, str]] = []
    for label in labels:
        files = sorted(p for p in (root / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out.extend((p, label) for i, p in enumerate(files) if _SPLIT_OF_REMAINDER[i % 5] == split)
    return out
