"""The few-shot search's subspace: chosen only where it reproduces the full search, and the smallest that does."""

from __future__ import annotations

import numpy as np

from edge.fit.search import agreement, choose_search_dims, search_basis
from edge.grounding.anomaly import few_shot_scores


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _patches(rng: np.random.Generator, n: int, rank: int, dim: int, noise: float) -> np.ndarray:
    """n unit patches that lie near a `rank`-dimensional subspace of R^dim (the same one for every seed)."""
    axes = np.linalg.qr(np.random.default_rng(123).standard_normal((dim, dim)))[0][:, :rank]
    return _unit(rng.standard_normal((n, rank)) @ axes.T + noise * rng.standard_normal((n, dim)))


def test_in_the_banks_own_subspace_the_search_is_the_full_search() -> None:
    rng = np.random.default_rng(0)
    bank = _patches(rng, 300, 12, 64, 0.0)
    grid = _patches(rng, 64, 12, 64, 0.0).reshape(8, 8, 64)
    basis = search_basis(bank, 12)
    np.testing.assert_allclose(basis @ basis.T, np.eye(12), atol=1e-5)  # orthonormal rows
    np.testing.assert_allclose(few_shot_scores(grid, bank, basis), few_shot_scores(grid, bank),
                               atol=1e-5)
    assert agreement([grid], bank, basis) > 0.9999


def test_the_smallest_size_that_reproduces_the_full_search_is_chosen() -> None:
    rng = np.random.default_rng(1)
    bank = _patches(rng, 400, 20, 64, 0.02)
    grids = [_patches(rng, 64, 20, 64, 0.02).reshape(8, 8, 64) for _ in range(3)]
    dims, measured = choose_search_dims([(bank, grids)], 64, candidates=(8, 24, 48))
    assert dims == 24
    assert measured["8"] < 0.99 <= measured["24"] and "48" not in measured  # larger sizes are not tried


def test_the_full_search_stays_where_no_subspace_reproduces_it() -> None:
    """Patches spread over every direction: no subspace of half the dimensions keeps the nearest neighbours; nor
    is a size tried that would not be smaller than the embedding."""
    rng = np.random.default_rng(2)
    bank = _unit(rng.standard_normal((400, 64)))
    grids = [_unit(rng.standard_normal((8, 8, 64)))]
    dims, measured = choose_search_dims([(bank, grids)], 64, candidates=(16, 32, 64, 96))
    assert dims is None
    assert set(measured) == {"16", "32"} and max(measured.values()) < 0.99


def test_the_worst_bank_decides() -> None:
    """Probes against each cross-fitting fold's bank: a size is taken only when every fold agrees."""
    rng = np.random.default_rng(3)
    low = _patches(rng, 300, 10, 64, 0.0)
    spread = _unit(rng.standard_normal((300, 64)))
    probes = [(low, [_patches(rng, 64, 10, 64, 0.0).reshape(8, 8, 64)]),
              (spread, [_unit(rng.standard_normal((8, 8, 64)))])]
    assert choose_search_dims(probes[:1], 64, candidates=(16,))[0] == 16
    assert choose_search_dims(probes, 64, candidates=(16,))[0] is None
