"""`lineside eval`: the judge of quality. Fixed seeded splits, the real frame path, a report directory.

Datasets (splits in edge.datasets):
- textile: profile calibrated on the textile *calib* split, which the starter pack was not trained on (a real line's
  images are new to the pack) — 50 nominal + 50 labelled defects (25 local, 25 global), drawn with the seed — and
  evaluated on the whole *test* split (200 nominal, 100 local, 100 global).
- elpv: defect = expert probability ≥ 0.5, stratified 75/25 split; profile fit on the 75 %, evaluated on the 25 %.
- elpv_unseen: the same test 25 %, profile fit on 50 functional + 50 defective cells of the 75 %.
- synthetic-loc: scratches / spots / cut-paste (edge.eval.synthetic) pasted on held-out nominal images (textile test
  nominal, ELPV test cells with probability 0), each line's profile calibrated on 50 good images only (textile
  calib, ELPV train).
Every test frame is encoded once and goes through `Inspector.inspect_embedding`, the daemon's own path; the ablation
scores (zero-shot / few-shot / both / + global / + head) are recomputed from the same embedding.
`--quick` draws a small seeded subset of every set (CI).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.eval.report import report_markdown, seeds_markdown
from edge.eval.scoring import Context
from edge.eval.sets import eval_elpv, eval_synthetic, eval_textile
from edge.fit.calibrate import DEFAULT_BANK_SIZE
from edge.progress import Progress, silent
from edge.vlm.cpu import cpu_model, cpu_target, usable_cores
from edge.vlm.pack import ModelPack

log = logging.getLogger(__name__)
DATASETS = ("textile", "elpv", "synthetic-loc")
LOOP_EVERY = 200  # reviews between retrainings in the review-loop simulation


def eval_command(datasets: Sequence[str], seed: int, quick: bool, loop: bool, loop_every: int,
                 bank_size: dict[int, int] | None, search_subspace: bool = False, operator_error: float = 0.0,
                 coarse_to_fine: bool = False) -> str:
    """The `lineside eval` command line that makes this report again."""
    words = ["lineside eval", "--dataset", "all" if set(datasets) == set(DATASETS) else ",".join(datasets)]
    words += ["--seed", str(seed)] if seed else []
    words += ["--quick"] if quick else []
    if loop:
        words += ["--loop"] + (["--loop-every", str(loop_every)] if loop_every != LOOP_EVERY else [])
        words += ["--operator-error", f"{operator_error:g}"] if operator_error else []
    words += ["--bank-size", str(bank_size[8])] if bank_size else []
    words += ["--search-subspace"] if search_subspace else []
    words += ["--coarse-to-fine"] if coarse_to_fine else []
    return " ".join(words + ["--out", "DIR"])


def run_eval(pack: ModelPack, datasets: Sequence[str], out: Path, quick: bool = False, seed: int = 0,
             provider: str = "cpu", progress: Progress = silent, loop: bool = False,
             loop_every: int = LOOP_EVERY, bank_size: dict[int, int] | None = None,
             search_subspace: bool = False, operator_error: float = 0.0,
             coarse_to_fine: bool = False) -> dict[str, Any]:
    started, started_at = time.monotonic(), time.time()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(pack, out, seed, quick, provider, progress, bank_size=bank_size,
                  search_subspace=search_subspace, coarse_to_fine=coarse_to_fine)
    report: dict[str, Any] = {}
    if "textile" in datasets:
        report["textile"] = eval_textile(ctx)
    if "elpv" in datasets:
        report.update(eval_elpv(ctx))
        if loop:
            from edge.eval.loop import run_loop

            report["elpv"]["loop"] = run_loop(ctx, loop_every, operator_error)
    if "synthetic-loc" in datasets:
        report.update(eval_synthetic(ctx))
    report["config"] = {
        "command": eval_command(datasets, seed, quick, loop, loop_every, bank_size, search_subspace, operator_error,
                                coarse_to_fine),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started_at)), "machine": {
            "cpu": cpu_model(), "cpu_target": cpu_target(), "cores": usable_cores()},
        "seed": seed, "quick": quick, "datasets": list(datasets), "pack_version": pack.version, "loop": loop,
        "operator_error": operator_error,
        "bank_size": {str(k): v for k, v in (bank_size or DEFAULT_BANK_SIZE).items()},
        "search_subspace": search_subspace, "coarse_to_fine": coarse_to_fine,
        "profile_versions": ctx.profiles, "provider": provider,
        "defect_rates": {"values": ctx.defect_rates,
                         "note": "the line's defect rate each profile was calibrated with (`lineside calibrate "
                                 "--defect-rate`): the share of defects in the line's set-up split; thresholds "
                                 "maximise accuracy at that rate (None: balanced accuracy)"},
        "splits": {
            "textile": "edge.datasets.textile_split: calibrate on calib, which the starter pack was not trained on "
                       "(50 nominal + 25 local + 25 global, seeded), evaluate on test",
            "elpv": "edge.datasets.elpv_split(seed): stratified by (probability, type), 75 % fit / 25 % test; "
                    "defect = probability ≥ 0.5",
            "elpv_unseen": "edge.datasets.elpv_per_class(train, 50, seed): 50 functional + 50 defective cells",
            "synthetic-loc": "edge.eval.synthetic on textile test nominal and ELPV test probability-0 cells; "
                             "profiles from 50 good images (textile calib, ELPV train)",
        },
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(report_markdown(report))
    return report


def run_seeds(pack: ModelPack, datasets: Sequence[str], out: Path, seeds: Sequence[int], quick: bool = False,
              provider: str = "cpu", progress: Progress = silent, loop: bool = False, loop_every: int = LOOP_EVERY,
              bank_size: dict[int, int] | None = None, search_subspace: bool = False,
              operator_error: float = 0.0, coarse_to_fine: bool = False) -> dict[str, Any]:
    """`run_eval` once per seed into out/seed-N (the review loop for the first seed only: it is the slow part), then
    out/report.json (every seed) and out/report.md (the first seed's report after the headline figures' mean ±
    sd over the seeds)."""
    reports = {}
    for i, seed in enumerate(seeds):
        reports[seed] = run_eval(pack, datasets, out / f"seed-{seed}", quick, seed, provider, progress,
                                 loop and i == 0, loop_every, bank_size, search_subspace, operator_error,
                                 coarse_to_fine)
    summary = seeds_markdown(reports)
    (out / "report.json").write_text(json.dumps({f"seed-{s}": r for s, r in reports.items()}, indent=2,
                                                default=float))
    first = (out / f"seed-{seeds[0]}" / "report.md").read_text()
    (out / "report.md").write_text(summary + "\n" + first)
    return {"seeds": reports, "summary": summary, "seconds": round(sum(r["seconds"] for r in reports.values()), 1)}
