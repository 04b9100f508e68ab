"""Fixed, documented splits of the development data sets (installed by the `datasets` extra).

textile (conformal-clip-data, MIT): 1,000 nominal, 500 local-defect, 500 global-defect images, 250×250. Within each
class, files sorted by name; index i goes to ``train`` if i % 5 in (0, 1, 2), ``calib`` if i % 5 == 3, ``test`` if
i % 5 == 4 (60 / 20 / 20). The starter pack is trained on ``train`` only; the demo streams ``test``.

elpv (elpv-dataset, CC BY-NC-SA 4.0): evaluation and line-setup tests only, never used to build the starter pack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edge.images import IMAGE_SUFFIXES

TextileSplit = Literal["train", "calib", "test"]
TEXTILE_LABELS = ("nominal", "local", "global")
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


# --- ELPV -------------------------------------------------------------------------------------------------------
# elpv (elpv-dataset 1.0.0.post1, CC BY-NC-SA 4.0): 2,624 cells, 300×300 grey, expert defect probability in
# {0, 1/3, 2/3, 1}, type mono/poly. A cell is *defective* when its probability is ≥ 0.5. The split is stratified by
# (probability, type): within each stratum, files in label-file order are shuffled with numpy's default_rng(seed)
# and the first 75 % (rounded) go to ``train``, the rest to ``test``. ``elpv_per_class(train, 50, seed)`` draws the
# "unseen line" set: 50 functional and 50 defective cells of the train part (also seeded).

ELPV_PROBABILITIES = (0.0, 1 / 3, 2 / 3, 1.0)


@dataclass(frozen=True, slots=True)
class ElpvCell:
    path: Path
    probability: float
    cell_type: str

    @property
    def defective(self) -> bool:
        return self.probability >= 0.5

    @property
    def label(self) -> str:
        """'0', '0.33', '0.67' or '1' — the expert probability as the report writes it."""
        return {0: "0", 1: "0.33", 2: "0.67", 3: "1"}[round(self.probability * 3)]


def elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise DatasetMissing("the ELPV data set is not installed: pip install 'lineside[datasets]' (elpv-dataset)"
                             ) from None
    return Path(elpv_dataset.__file__).resolve().parent / "data"


def elpv_cells() -> list[ElpvCell]:
    """All cells in the order of the package's labels.csv (read here: the package's loader needs PIL)."""
    root = elpv_root()
    cells = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            cells.append(ElpvCell(root / parts[0], float(parts[1]), parts[2]))
    return cells


def elpv_split(seed: int = 0, train_fraction: float = 0.75) -> tuple[list[ElpvCell], list[ElpvCell]]:
    """(train, test), stratified by probability and cell type."""
    strata: dict[tuple[str, str], list[ElpvCell]] = {}
    for cell in elpv_cells():
        strata.setdefault((cell.label, cell.cell_type), []).append(cell)
    rng = np.random.default_rng(seed)
    train: list[ElpvCell] = []
    test: list[ElpvCell] = []
    for key in sorted(strata):
        members = strata[key]
        order = rng.permutation(len(members))
        n_train = round(len(members) * train_fraction)
        train.extend(members[i] for i in order[:n_train])
        test.extend(members[i] for i in order[n_train:])
    return train, test


def elpv_per_class(cells: list[ElpvCell], per_class: int, seed: int = 0) -> list[ElpvCell]:
    """`per_class` functional and `per_class` defective cells drawn (seeded) from `cells`."""
    rng = np.random.default_rng(seed)
    out: list[ElpvCell] = []
    for defective in (False, True):
        group = [c for c in cells if c.defective == defective]
        out.extend(group[i] for i in sorted(rng.permutation(len(group))[:per_class]))
    return out
