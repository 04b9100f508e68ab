"""edge/fit/line_model.py: the training-time dropout zeroes the share it is set to wherever the batch's values lie in
memory (the tower's grids can come channels-last), and a fit is the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.fit.line_model import DROPOUT, LineSample, _dropped, train_line_model


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_dropout_zeroes_its_share_and_leaves_the_other_values_as_they_are(layout: str) -> None:
    grids = torch.randn(4, 32, 32, 64).permute(0, 3, 1, 2) if layout == "channels-last" else torch.randn(4, 64, 32, 32)
    batch = grids.clone(memory_format=torch.preserve_format)
    out = _dropped(batch, np.random.PCG64(0))
    assert out is batch and out.stride() == grids.stride()  # in place
    zeroed = out == 0
    assert abs(float(zeroed.float().mean()) - DROPOUT) < 0.003  # 262,144 values: the share within ± 5 σ
    assert torch.equal(out[~zeroed], grids[~zeroed])
    # every channel and position loses values, not a block of memory
    assert bool(zeroed.any(dim=(0, 2, 3)).all()) and bool(zeroed.any(dim=(0, 1)).all())
    again = _dropped(grids.clone(memory_format=torch.preserve_format), np.random.PCG64(0))
    assert torch.equal(again, out)


def _samples(count: int) -> list[LineSample]:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(count):
        target = (rng.random((32, 32)) < 0.05).astype(np.float32)
        samples.append(LineSample(rng.standard_normal((32, 32, 32)).astype(np.float16).transpose(2, 0, 1),
                                  rng.standard_normal((32, 16, 16)).astype(np.float16),
                                  rng.standard_normal((32, 32)).astype(np.float32), target, np.ones_like(target)))
    return samples


def test_a_fit_is_the_same_for_the_same_seed_and_another_for_another() -> None:
    samples = _samples(20)
    first, second = train_line_model(samples, seed=3, epochs=2), train_line_model(samples, seed=3, epochs=2)
    other = train_line_model(samples, seed=4, epochs=2)
    weights = first.state_arrays()
    assert all(np.array_equal(weights[k], v) for k, v in second.state_arrays().items())
    assert not np.array_equal(weights["reduce8.weight"], other.state_arrays()["reduce8.weight"])
