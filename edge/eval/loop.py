"""`lineside eval --loop`: the active-learning simulation — does reviewing make the line surer?

ELPV's fit split is replayed as a stream in a seeded order; the ground truth stands in for the operator. The line
starts from a profile calibrated on 50 functional + 50 defective cells (the rest of the stream is new to it). Every
streamed cell is decided by the current version; the ones its routing policy sends to review (risk policy,
`LOOP_ALPHA`, δ = 0.1; OoD frames always) are answered with their label, and after every `every` answers the
profile is refit from the first rows plus all answers — what `lineside train` does with the station's reviews
(edge.fit.refit; memory bank and patch statistics stay as calibrated). After each version the fixed test
split is scored: coverage at 1 % and 5 % selective risk (threshold chosen on random calibration halves, as in
edge.eval.failure), accuracy and failure AUROC; the reviewer's workload is the share of that round's stream the
version sent to review, and `escaped_per_1000` the defects it decided good by itself (they left unnoticed) per
1,000 frames of that round's stream.

`--operator-error E` adds the same loop twice with a fallible operator, who answers a share E of the frames wrong:
once as answered, once with the labels to check (edge.fit.refit.label_suspects) answered again after each
retraining, as `lineside train --recheck` sends them back to the station's queue (`noisy` in the result).

Every cell is encoded once, with the first version's bank: a version's decisions are then a function of the
cell's feature row (edge.inspect.assess.decision_margins / assess_rows — the same code the daemon runs per frame).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.datasets import ElpvCell, elpv_per_class, elpv_split
from edge.eval import plots
from edge.eval.failure import routing_by_splits
from edge.fit.refit import RoutingSpec, refit
from edge.images import read_image
from edge.inspect.assess import assess_rows, decision_margins
from edge.inspect.inspector import Inspector
from edge.profile.line_profile import LineProfile
from edge.profile.rows import LabelledRows
from edge.progress import Progress
from edge.stats import accuracy, auroc

log = logging.getLogger(__name__)
LOOP_ALPHA = 0.05
SEED_PER_CLASS = 50


def _rows(inspector: Inspector, cells: Sequence[ElpvCell], progress: Progress, label: str) -> np.ndarray:
    return np.stack([inspector.frame_row(inspector.image_encoder.encode(read_image(c.path)))
                     for c in progress(list(cells), label)])


def _score_version(profile: LineProfile, inspector: Inspector, rows: np.ndarray, truth: np.ndarray,
                   seed: int) -> dict[str, float]:
    dim = inspector.pack.embedding_dim
    z = decision_margins(profile, rows, dim)
    assessed = assess_rows(profile, rows, z, inspector.text_bank, inspector.pack.logit_scale, dim)
    u = assessed.p_wrong if assessed.p_wrong is not None else assessed.baselines["msp"]
    wrong = ((z > 0).astype(int) != truth).astype(int)
    return {"accuracy": round(accuracy(truth, (z > 0).astype(int)), 4),
            "failure_auroc": round(auroc(wrong, u), 4) if 0 < wrong.sum() < wrong.size else float("nan"),
            "coverage_at_1pct": routing_by_splits(u, wrong, 0.01, seed)["coverage"],
            "coverage_at_5pct": routing_by_splits(u, wrong, 0.05, seed)["coverage"]}


def _routed(profile: LineProfile, inspector: Inspector, rows: np.ndarray) -> np.ndarray:
    """Which of these frames the version sends to review (the daemon's rule: OoD, or p(wrong) above the profile's
    threshold; without a predictor everything goes — the line cannot vouch for any decision yet)."""
    dim = inspector.pack.embedding_dim
    z = decision_margins(profile, rows, dim)
    assessed = assess_rows(profile, rows, z, inspector.text_bank, inspector.pack.logit_scale, dim)
    routed = np.ones(rows.shape[0], bool)
    if assessed.p_wrong is not None and profile.routing:
        routed = assessed.p_wrong > float(profile.routing["threshold"])
    if assessed.ood_distance is not None and profile.ood is not None:
        routed |= assessed.ood_distance > profile.ood.threshold
    return routed


@dataclass
class _Stream:
    """What every simulated loop starts from: the first version and the rows of the stream and the test cells."""

    inspector: Inspector
    first_rows: LabelledRows
    test_rows: np.ndarray
    test_truth: np.ndarray
    stream_rows: np.ndarray
    stream_truth: np.ndarray
    every: int
    seed_cells: int


def _prepare(ctx: Any, every: int) -> _Stream:
    train, test = elpv_split(ctx.seed)
    seed_cells = elpv_per_class(train, 12 if ctx.quick else SEED_PER_CLASS, ctx.seed)
    seed_paths = {c.path for c in seed_cells}
    stream = [c for c in train if c.path not in seed_paths]
    stream = [stream[i] for i in np.random.default_rng(ctx.seed).permutation(len(stream))]
    stream = stream[:120] if ctx.quick else stream
    test = ctx.subset(test, 60)
    # told the line's defect rate as the elpv profiles are (edge.eval.run.eval_elpv): the reviewed frames are the
    # unsure ones, a mix that says nothing of what the line makes
    inspector: Inspector = ctx.fit("elpv_loop", [c.path for c in seed_cells if not c.defective],
                                   [c.path for c in seed_cells if c.defective],
                                   defect_rate=sum(c.defective for c in train) / len(train))
    assert inspector.profile.rows is not None  # calibrate keeps the rows it fit on
    return _Stream(inspector, copy.deepcopy(inspector.profile.rows),
                   _rows(inspector, test, ctx.progress, "loop: test cells"), np.array([int(c.defective) for c in test]),
                   _rows(inspector, stream, ctx.progress, "loop: stream cells"),
                   np.array([int(c.defective) for c in stream]), 40 if ctx.quick else every, len(seed_cells))


def _simulate(ctx: Any, s: _Stream, operator_error: float = 0.0, recheck: bool = False) -> dict[str, Any]:
    """One loop from the first version. The operator answers a frame wrong with probability `operator_error` (drawn
    once per frame, seeded, so runs with and without `recheck` meet the same mistakes); with `recheck`, after each
    retraining the answers among its labels to check (edge.fit.refit.label_suspects) are given again (a fresh
    draw each, as another look by someone as fallible) and count in the next retraining — as `lineside train
    --recheck` sends them back to the queue."""
    inspector, profile = s.inspector, s.inspector.profile
    dim, spec = inspector.pack.embedding_dim, RoutingSpec("risk", LOOP_ALPHA, 0.1)
    rng = np.random.default_rng(ctx.seed + 1)
    answered_wrong = rng.random(s.stream_truth.size) < operator_error
    answered_wrong_again = rng.random((s.stream_truth.size, 8)) < operator_error
    looks = np.zeros(s.stream_truth.size, int)  # how often each frame was answered again
    rounds: list[dict[str, Any]] = [{"round": 0, "reviews": 0, "rows": len(s.first_rows), "streamed": 0,
                                     "workload": float("nan"), "escaped": 0, "escaped_per_1000": float("nan"),
                                     **_score_version(profile, inspector, s.test_rows, s.test_truth, ctx.seed)}]
    answered: list[int] = []
    position = 0
    while position < s.stream_rows.shape[0]:
        # stream until `every` frames were sent to review (or the stream ends) under the current version
        routed = _routed(profile, inspector, s.stream_rows[position:])
        cumulative = np.cumsum(routed)
        end = position + (int(np.searchsorted(cumulative, s.every)) + 1 if cumulative[-1] >= s.every
                          else len(routed))
        chunk = np.arange(position, end)
        sent = chunk[routed[: end - position]]
        answered.extend(int(i) for i in sent)
        workload = float(sent.size / max(chunk.size, 1))
        # what this version decided alone: a defect it called good went out unnoticed
        auto = chunk[~routed[: end - position]]
        decided_defect = decision_margins(profile, s.stream_rows[auto], dim) > 0 if auto.size else np.zeros(0, bool)
        escaped = int(((s.stream_truth[auto] == 1) & ~decided_defect).sum())
        escaped_per_1000 = round(1000.0 * escaped / max(chunk.size, 1), 2)
        position = end
        idx = np.array(answered, int)
        wrong_now = np.where(looks[idx] == 0, answered_wrong[idx],
                             answered_wrong_again[idx, np.minimum(looks[idx], 8) - 1])
        answers = np.where(wrong_now, 1 - s.stream_truth[idx], s.stream_truth[idx])
        reviewed = LabelledRows(s.stream_rows[idx], answers, sources=[f"review:{i}" for i in answered])
        profile = copy.copy(profile)
        rows = s.first_rows.extend(reviewed)
        fitted = refit(profile, rows, inspector.text_bank, inspector.pack.logit_scale, dim, spec, seed=ctx.seed)
        first = len(rows) - len(reviewed)  # the answers are the last rows, in `answered` order
        again = [answered[x["row"] - first] for x in fitted["label_suspects"] if x["row"] >= first] if recheck else []
        looks[again] += 1
        rounds.append({"round": len(rounds), "reviews": len(answered), "rows": len(s.first_rows) + len(answered),
                       "streamed": position, "workload": round(workload, 4), "escaped": escaped,
                       "escaped_per_1000": escaped_per_1000, "wrong_answers": int(wrong_now.sum()),
                       "asked_again": len(again),
                       **_score_version(profile, inspector, s.test_rows, s.test_truth, ctx.seed)})
        last = rounds[-1]
        log.info("loop round %d: %d reviews, workload %.2f, accuracy %.3f, coverage at 1 %% risk %.3f",
                 last["round"], last["reviews"], workload, last["accuracy"], last["coverage_at_1pct"])
    return {
        "rounds": rounds, "every": s.every, "alpha_routing": LOOP_ALPHA, "stream": int(s.stream_truth.size),
        "test": int(s.test_truth.size), "seed_cells": s.seed_cells,
        "coverage_at_1pct_by_round": [r["coverage_at_1pct"] for r in rounds],
        "coverage_at_5pct_by_round": [r["coverage_at_5pct"] for r in rounds],
        "workload_by_round": [r["workload"] for r in rounds],
        "escaped_per_1000_by_round": [r["escaped_per_1000"] for r in rounds],
        "escaped_per_1000": rounds[-1]["escaped_per_1000"],
        "accuracy_by_round": [r["accuracy"] for r in rounds],
    }


def run_loop(ctx: Any, every: int = 200, operator_error: float = 0.0) -> dict[str, Any]:
    """The simulation on ELPV; `ctx` is edge.eval.run.Context (fit, subset, progress, out, seed, quick). With
    `operator_error` > 0, under `noisy` the same loop twice more with an operator who answers that share of frames
    wrong: as the answers are (`answers`), and with the labels to check answered again after each retraining
    (`recheck`)."""
    stream = _prepare(ctx, every)
    result = _simulate(ctx, stream)
    _plot(result, ctx.out / "loop_elpv.png")
    if operator_error > 0:
        result["noisy"] = {"operator_error": operator_error,
                           "answers": _simulate(ctx, stream, operator_error),
                           "recheck": _simulate(ctx, stream, operator_error, recheck=True)}
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    n = max(len(result["rounds"]) - 1, 1)
    x = np.array([r["round"] / n for r in result["rounds"]])
    curves = {
        "coverage at 1 % risk": (x, np.array(result["coverage_at_1pct_by_round"], float),
                                 f"{result['coverage_at_1pct_by_round'][-1]:.2f}"),
        "coverage at 5 % risk": (x, np.array(result["coverage_at_5pct_by_round"], float),
                                 f"{result['coverage_at_5pct_by_round'][-1]:.2f}"),
        "reviewer workload": (x[1:], np.array(result["workload_by_round"][1:], float),
                              f"{result['workload_by_round'][-1]:.2f}"),
        "accuracy": (x, np.array(result["accuracy_by_round"], float), f"{result['accuracy_by_round'][-1]:.2f}"),
    }
    plots.lines_png(curves, f"ELPV review loop: {n} retrains, every {result['every']} reviews",
                    f"round (0 … {n})", path, markers=True)
