"""The line model: learned layers over the pack's patch embeddings that say, per stride-8 patch, how likely it shows a
defect of this line — a dense defect map learnt from the line's own images.

Inputs per frame: the two patch grids (stride 8 and 16, the pack's joint embedding, standardised per channel with
the line's statistics) and the profile's anomaly map (zero- ⊕ few-shot, in good-image standard deviations). Each is
reduced by a 1×1 convolution to `WIDTH` channels, summed on the stride-8 grid, then one residual block (depthwise
3×3 + pointwise, GELU) and a 1×1 convolution to one logit per patch. ~20 k weights; in the frame graph it costs a
few percent of the tower.

Targets (`LineSample`): synthetic defects pasted on the line's good images (edge.fit.synthetic; a patch is a defect
where the mask covers ≥ 25 % of it, good where it covers none, left out in between), the good images themselves (every
patch good), and the operator's boxes from the station's reviews (patches inside a box a defect, the rest of that
frame left out: a box says where a defect is, not that nothing else is). Loss: binary cross-entropy per patch, the
defect patches weighted up to the good ones' count (at most `MAX_POS_WEIGHT`); AdamW, cosine schedule, horizontal
and vertical flips, dropout of the standardised grids' values (`DROPOUT`). Trained with torch at calibrate / train
time, exported into the frame graph; the daemon never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 24
EPOCHS = 30
BATCH = 16
LR = 3e-3
WEIGHT_DECAY = 0.05
MAX_POS_WEIGHT = 50.0
COVERED, CLEAR = 0.25, 0.0  # mask coverage of a patch: ≥ COVERED a defect, = CLEAR good, between left out
DROPOUT = 0.1  # share of the standardised grids' values zeroed while training
_DROP_BELOW = round(DROPOUT * 65536)  # a value is zeroed where its 16 random bits fall below this


@dataclass
class LineSample:
    """One training frame: its tower outputs (float16: s8 [D, 32, 32], s16 [D, 16, 16]), its anomaly map, and
    per-patch targets with their weights (0 = left out)."""

    s8: np.ndarray
    s16: np.ndarray
    anomaly_map: np.ndarray
    target: np.ndarray
    weight: np.ndarray


def tower_grids(outputs: list[np.ndarray], i: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame i's stride-8 and stride-16 patch grids from the image tower's outputs (embedding, then the grids finest
    first), float16 as the line model keeps them; None for a pack with one grid (no line model)."""
    if len(outputs) < 3:
        return None
    return outputs[1][i].astype(np.float16), outputs[2][i].astype(np.float16)


def patch_targets(mask: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) per patch from a frame's defect mask (True = defect pixel)."""
    coverage = cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    target = (coverage >= COVERED).astype(np.float32)
    weight = ((coverage >= COVERED) | (coverage <= CLEAR)).astype(np.float32)
    return target, weight


def box_targets(boxes: list[tuple[int, int, int, int]], width: int, height: int, grid: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) from the operator's boxes: inside a box a defect, the rest left out."""
    mask = np.zeros((height, width), bool)
    for x, y, w, h in boxes:
        mask[max(0, y):y + h, max(0, x):x + w] = True
    target, _ = patch_targets(mask, grid)
    return target, target.copy()


class LineModel(nn.Module):
    mean8: torch.Tensor
    std8: torch.Tensor
    mean16: torch.Tensor
    std16: torch.Tensor

    def __init__(self, dim: int, mean8: np.ndarray, std8: np.ndarray, mean16: np.ndarray, std16: np.ndarray,
                 width: int = WIDTH) -> None:
        super().__init__()
        self.dim, self.width = dim, width
        for name, value in (("mean8", mean8), ("std8", std8), ("mean16", mean16), ("std16", std16)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)).view(1, -1, 1, 1))
        self.reduce8 = nn.Conv2d(dim, width, 1)
        self.reduce16 = nn.Conv2d(dim, width, 1)
        self.reduce_map = nn.Conv2d(1, width, 1)
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pointwise = nn.Conv2d(width, width, 1)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, s8: torch.Tensor, s16: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Per-patch defect logits [N, 32, 32] (the stride-8 grid)."""
        return self.logits((s8 - self.mean8) / self.std8, (s16 - self.mean16) / self.std16, anomaly_map)

    def logits(self, x8: torch.Tensor, x16: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor:
        """`forward` on grids already standardised with the line's statistics."""
        h = (self.reduce8(x8) + F.interpolate(self.reduce16(x16), size=x8.shape[-2:], mode="bilinear",
                                              align_corners=False)
             + self.reduce_map(anomaly_map[:, None] / 4.0))
        h = F.gelu(h)
        h = h + self.pointwise(F.gelu(self.depthwise(h)))
        return self.out(h)[:, 0]

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LineModel:
        dim, width = int(arrays["reduce8.weight"].shape[1]), int(arrays["reduce8.weight"].shape[0])
        zeros = np.zeros(dim, np.float32)
        model = cls(dim, zeros, zeros + 1, zeros, zeros + 1, width)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
        return model


def _stack(samples: list[LineSample]) -> tuple[torch.Tensor, ...]:
    return (torch.as_tensor(np.stack([s.s8 for s in samples])).float(),
            torch.as_tensor(np.stack([s.s16 for s in samples])).float(),
            torch.as_tensor(np.stack([s.anomaly_map for s in samples])).float(),
            torch.as_tensor(np.stack([s.target for s in samples])).float(),
            torch.as_tensor(np.stack([s.weight for s in samples])).float())


def _dropped(grids: torch.Tensor, bits: np.random.PCG64) -> torch.Tensor:
    """`grids` (a batch's own copy, standardised and scaled by 1 / (1 − DROPOUT)) with each value zeroed with
    probability DROPOUT, in place: inverted dropout. torch's CPU dropout draws its Bernoulli numbers one value at a
    time — 33 ms for a batch of 16 stride-8 grids, most of a calibrate's line-model fits — where 16 bits a value
    from numpy's PCG64, a comparison and one multiplication take about 7 ms."""
    values = grids.numpy()
    # the values in the order they lie in memory (the tower's grids may come channels-last): a strided pass over
    # them costs several times a sequential one
    values = values.transpose(np.argsort(values.strides)[::-1])
    bits16 = bits.random_raw(-(-values.size // 4)).view(np.uint16)[:values.size].reshape(values.shape)
    np.multiply(values, bits16 >= _DROP_BELOW, out=values)
    return grids


def train_line_model(samples: list[LineSample], seed: int = 0, epochs: int = EPOCHS,
                     start: LineModel | None = None) -> LineModel:
    """Fit the line model on `samples` (from `start`'s weights when given: a retraining goes on from the last
    version rather than from nothing)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    bits = np.random.PCG64(seed)
    s8, s16, maps, target, weight = _stack(samples)
    if start is None:
        model = LineModel(s8.shape[1], s8.mean(dim=(0, 2, 3)).numpy(), s8.std(dim=(0, 2, 3)).numpy() + 1e-4,
                          s16.mean(dim=(0, 2, 3)).numpy(), s16.std(dim=(0, 2, 3)).numpy() + 1e-4)
    else:
        model = LineModel.from_arrays(start.state_arrays())
    # standardised once, not per step (the stacked grids are this fit's own copy)
    kept = 1.0 / (1.0 - DROPOUT)
    s8 = s8.sub_(model.mean8).div_(model.std8).mul_(kept)
    s16 = s16.sub_(model.mean16).div_(model.std16).mul_(kept)
    positives = float((target * weight).sum())
    negatives = float(((1 - target) * weight).sum())
    pos_weight = torch.tensor(min(MAX_POS_WEIGHT, negatives / max(positives, 1.0)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(len(samples) / BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(samples), generator=generator)
        for b in range(0, len(samples), BATCH):
            pick = order[b:b + BATCH]
            batch = [t[pick] for t in (s8, s16, maps, target, weight)]
            for axis in (-1, -2):  # the line's defects have no preferred side
                if bool(torch.rand((), generator=generator) < 0.5):
                    batch = [t.flip(axis) for t in batch]
            x8, x16, m, t, w = batch  # copies: indexing and flipping copy
            logits = model.logits(_dropped(x8, bits), _dropped(x16, bits), m)
            loss = (F.binary_cross_entropy_with_logits(logits, t, reduction="none",
                                                       pos_weight=pos_weight) * w).sum() / w.sum().clamp(min=1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return model


def patch_logits(model: LineModel, samples: list[LineSample]) -> np.ndarray:
    """Defect logit per patch [N, 32, 32] (the line map regions are cut from)."""
    s8, s16, maps, _, _ = _stack(samples)
    with torch.no_grad():
        return model(s8, s16, maps).numpy()
