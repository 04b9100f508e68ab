"""The subspace the few-shot search runs in: fewer dimensions where they reproduce the full search.

The search compares every patch of a frame with every patch of the memory bank (2,048 at stride 8 by default):
0.54 G multiply-adds a frame at D = 256, about what the image tower costs. The bank's patches of one line fill few
directions of the embedding — on the starter pack the first 96 of 256 carry 97–98 % of their energy — so patches and
bank projected on those directions (the bank's uncentred principal axes: dot products are what the search compares)
give nearly the same nearest-patch similarities at a fraction of the cost.

Asked for at calibrate (`lineside calibrate --search-subspace`; the default is the full search: on ELPV the subspace
moved the failure and routing figures by more than the 0.005 a speed change may cost, README "Search subspace").
Whether it reproduces the search is measured on the line's own images, not assumed: bank images are scored against a
bank built without their fold, by the full search and by the search in k dimensions (the fold bank's own basis), and
the smallest k in SEARCH_DIMS whose few-shot scores correlate with the full search's by at least MIN_AGREEMENT is
the stride's; where none does, the stride keeps the full search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.grounding.anomaly import SEARCH_CANDIDATES, few_shot_scores, search_candidates

SEARCH_DIMS = (64, 96, 128)  # candidate subspace sizes, smallest first; beyond half of D little is saved
MIN_AGREEMENT = 0.99  # correlation of the projected search's patch scores with the full search's, good images
# similarities in the subspace closer than this may swap places between numpy and another runtime's float kernels
TIE_MARGIN = 1e-4


def search_basis(bank: np.ndarray, dims: int) -> np.ndarray:
    """The bank's first `dims` uncentred principal axes, [dims, D] float32 with orthonormal rows."""
    _, _, vt = np.linalg.svd(np.asarray(bank, np.float64), full_matrices=False)
    return np.ascontiguousarray(vt[:dims], dtype=np.float32)


def agreement(probes: Sequence[np.ndarray], bank: np.ndarray, basis: np.ndarray) -> float:
    """Correlation over all probe patches ([h, w, D] grids) of the projected search's few-shot scores with the full
    search's."""
    full = np.concatenate([few_shot_scores(p, bank).ravel() for p in probes])
    approx = np.concatenate([few_shot_scores(p, bank, basis).ravel() for p in probes])
    if float(full.std()) == 0.0 or float(approx.std()) == 0.0:
        return float(np.allclose(full, approx, atol=1e-4))
    return float(np.corrcoef(full, approx)[0, 1])


def choose_search_dims(probes: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], dim: int,
                       candidates: Sequence[int] = SEARCH_DIMS, min_agreement: float = MIN_AGREEMENT
                       ) -> tuple[int | None, dict[str, float]]:
    """The smallest subspace size whose search agrees with the full one on `probes` — (bank, patch grids [h, w, D]
    of images the bank was built without) pairs; the worst bank counts — and the agreement measured at each size
    tried. None: the full search (no candidate agrees, or none is smaller than `dim`)."""
    measured: dict[str, float] = {}
    for k in candidates:
        if k >= dim:
            break
        worst = min(agreement(grids, bank, search_basis(bank, k)) for bank, grids in probes)
        measured[str(k)] = round(worst, 5)
        if worst >= min_agreement:
            return k, measured
    return None, measured


def fragile_patches(grid: np.ndarray, bank: np.ndarray, basis: np.ndarray) -> int:
    """How many patches of a grid [h, w, D] would score otherwise if the last bank patch the subspace search keeps
    as a candidate and the first it leaves out swapped places — their similarities in the subspace within
    TIE_MARGIN of each other, and the full cosines telling them apart."""
    flat = grid.reshape(-1, grid.shape[-1])
    full, similar = search_candidates(flat, bank, basis, bank @ basis.T, SEARCH_CANDIDATES + 1)
    if full.shape[1] <= SEARCH_CANDIDATES:  # every bank patch is a candidate: nothing is left out
        return 0
    order = np.argsort(-similar, axis=1, kind="stable")  # most similar on the axes first
    full, similar = np.take_along_axis(full, order, axis=1), np.take_along_axis(similar, order, axis=1)
    last = SEARCH_CANDIDATES - 1
    kept = full[:, :SEARCH_CANDIDATES].max(axis=1)
    swapped = np.maximum(full[:, :last].max(axis=1, initial=-np.inf), full[:, SEARCH_CANDIDATES])
    near = similar[:, last] - similar[:, SEARCH_CANDIDATES] < TIE_MARGIN
    return int(np.count_nonzero(near & (kept != swapped)))
