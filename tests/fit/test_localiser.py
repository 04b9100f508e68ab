"""The line model's map is its logit plus the multiple of the anomaly map that ranks held-out defects' pixels best."""

from dataclasses import replace

import numpy as np
import pytest

from edge.fit.line_model import LineSample
from edge.fit.localiser import MAP_WEIGHTS, choose_map_weight, pixel_auroc
from edge.fit.regions import PastedDefect


def _defects(rng: np.random.Generator, n: int) -> tuple[list[PastedDefect], np.ndarray, np.ndarray]:
    """n frames of 256×256 px with a 16×16 px defect; per frame an anomaly map that rises on it, and a perfect
    'logit' map (high on the defect's patches, flat elsewhere)."""
    defects, perfect = [], []
    for _ in range(n):
        y, x = (int(v) for v in rng.integers(2, 28, 2))
        anomaly = rng.normal(0, 1, (32, 32)).astype(np.float32)
        anomaly[y:y + 2, x:x + 2] += 3.0
        logit = np.full((32, 32), -12.0, np.float32)
        logit[y:y + 2, x:x + 2] = 4.0
        mask = np.zeros((256, 256), bool)
        mask[8 * y:8 * y + 16, 8 * x:8 * x + 16] = True
        defects.append(PastedDefect(anomaly, mask, 256, 256))
        perfect.append(logit)
    return defects, np.stack(perfect), np.stack([d.anomaly_map for d in defects])


def test_a_line_model_that_misses_half_the_defects_gets_the_anomaly_map_added() -> None:
    """Defects unlike those it learnt: on every other frame the line model's logit stays flat, far below even
    odds, while the anomaly map still rises there — the sum ranks those defects' pixels, the logit alone cannot."""
    defects, logits, maps = _defects(np.random.default_rng(0), 20)
    logits[::2] = -12.0 + np.random.default_rng(1).normal(0, 0.1, logits[::2].shape)
    weight, table = choose_map_weight(logits, defects, level=2.0)
    assert weight > 0 and table[f"{weight:g}"] > table["0"] + 0.05
    assert set(table) == {f"{w:g}" for w in MAP_WEIGHTS}
    assert round(pixel_auroc(logits + weight * (maps - 2.0), defects), 4) == table[f"{weight:g}"]


def test_defects_too_small_for_the_sampled_pixels_leave_the_logit_alone() -> None:
    defects, logits, _ = _defects(np.random.default_rng(4), 3)
    dots = [replace(d, mask=np.zeros_like(d.mask)) for d in defects]
    for d in dots:
        d.mask[1, 1] = True  # off the every-other-pixel grid the pixel AUROC reads
    weight, table = choose_map_weight(logits, dots, level=2.0)
    assert weight == 0.0 and all(np.isnan(v) for v in table.values())


def test_a_line_model_that_finds_every_defect_keeps_its_logit_alone() -> None:
    defects, logits, _ = _defects(np.random.default_rng(2), 20)
    weight, table = choose_map_weight(logits, defects, level=2.0)
    assert weight == 0.0 and table["0"] > 0.99


def test_the_multiple_is_chosen_on_defects_of_kinds_the_scoring_model_did_not_learn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each held-out pasted defect whose pixels choose the multiple is scored by a line model fit on the other
    kinds only: a model scored on the kinds it learnt finds them all (0.994 on both evaluation lines) and would
    never add the map, which the defects a line really has need."""
    from edge.fit import localiser
    from edge.fit.synthetic import FIT_KINDS

    rng = np.random.default_rng(3)
    pasted = []
    for i in range(24):
        defect, _, _ = _defects(rng, 1)
        pasted.append(replace(defect[0], tower=(np.zeros((4, 32, 32), np.float16), np.zeros((4, 16, 16), np.float16)),
                              source=i // 2, kind=FIT_KINDS[i % len(FIT_KINDS)]))
    kind_of = {id(d.anomaly_map): d.kind for d in pasted}
    learnt: dict[int, set[str]] = {}
    scored: list[tuple[set[str], list[str]]] = []

    def train(samples: list[LineSample], seed: int = 0, epochs: int = 30) -> object:
        model = object()
        learnt[id(model)] = {kind_of[id(s.anomaly_map)] for s in samples if id(s.anomaly_map) in kind_of}
        return model

    def logits(model: object, samples: list[LineSample]) -> np.ndarray:
        scored.append((learnt[id(model)], [kind_of[id(s.anomaly_map)] for s in samples]))
        return np.stack([s.anomaly_map for s in samples])

    monkeypatch.setattr(localiser, "train_line_model", train)
    monkeypatch.setattr(localiser, "patch_logits", logits)
    _, cut, measured = localiser.fit_localiser(pasted, [], map_threshold=2.0)
    across = [(kinds, on) for kinds, on in scored if len(set(on)) == 1]
    assert sorted(on[0] for _, on in across) == sorted(FIT_KINDS)
    assert all(on[0] not in kinds and kinds for kinds, on in across)
    assert sum(len(on) for _, on in across) == measured["pasted_held_out"]
    assert set(measured["region_pixel_auroc_by_map_weight"]) == {f"{w:g}" for w in MAP_WEIGHTS}
