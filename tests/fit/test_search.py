"""The few-shot search's subspace: chosen only where it reproduces the full search, and the smallest that does."""

from __future__ import annotations

import numpy as np

from edge.fit.search import agreement, choose_search_dims, fragile_patches, search_basis
from edge.grounding.anomaly import SEARCH_CANDIDATES, few_shot_scores


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


def test_candidates_found_in_the_subspace_are_scored_in_all_dimensions() -> None:
    """Bank patches with a little outside the bank's main axes, and frame patches close to them: compared on
    those axes alone each patch's similarity to its nearest is off by that little, which the map would read;
    compared again in all dimensions, each patch scores as the full search scores it."""
    rng = np.random.default_rng(4)
    bank = _patches(rng, 400, 16, 64, 0.05)
    grid = _unit(bank[rng.choice(400, 64, replace=False)] + 0.01 * rng.standard_normal((64, 64))).reshape(8, 8, 64)
    basis = search_basis(bank, 16)
    full = few_shot_scores(grid, bank)
    searched = few_shot_scores(grid, bank, basis)
    projected_only = 1.0 - ((grid.reshape(-1, 64) @ basis.T) @ (bank @ basis.T).T).max(axis=1).reshape(8, 8)
    assert np.abs(projected_only - full).min() > 1e-3  # the subspace alone misses every patch's own residual
    np.testing.assert_allclose(searched, full, atol=1e-5)


def tie_in_the_subspace(gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patch, a bank and a basis (the first two axes) where SEARCH_CANDIDATES − 1 bank patches are the most
    similar on the basis but far in all dimensions, and two more follow, `gap` apart on the basis: the one the
    patch is close to in all dimensions, then one it is not."""
    e = np.eye(4, dtype=np.float32)
    patch = _unit(e[0] + e[2])[None, None]
    decoys = np.repeat(_unit(0.9 * e[0] - 0.44 * e[2])[None], SEARCH_CANDIDATES - 1, axis=0)
    close = _unit(0.5 * e[0] + 0.866 * e[2])
    far = 0.5 - gap  # on the basis, `far` trails `close` by about `gap`
    other = np.array([far, 0.0, 0.0, np.sqrt(1 - far ** 2)], np.float32)
    return patch, np.vstack([decoys, close, other]).astype(np.float32), e[:2]


def test_a_near_tie_at_the_candidates_cut_is_found() -> None:
    """Rounding in another runtime could swap two bank patches whose similarities on the basis differ by less
    than float error; where the full cosines then give another score, the patch is fragile (the frame graph keeps
    no such frame among its references); where they stand well apart, it is not."""
    assert fragile_patches(*tie_in_the_subspace(0.0)) == 1
    assert fragile_patches(*tie_in_the_subspace(1e-6)) == 1
    assert fragile_patches(*tie_in_the_subspace(0.05)) == 0
    patch, bank, basis = tie_in_the_subspace(0.0)
    assert fragile_patches(patch, bank[:SEARCH_CANDIDATES], basis) == 0  # every bank patch is a candidate
