"""`lineside eval`: the judge of quality. Fixed seeded splits, the real frame path, a report directory.

Datasets (splits in edge.datasets):
- textile: profile calibrated on the textile *train* split — 50 nominal + 50 labelled defects (25 local, 25 global),
  drawn with the seed — and evaluated on the whole *test* split (200 nominal, 100 local, 100 global).
- elpv: defect = expert probability ≥ 0.5, stratified 75/25 split; profile fit on the 75 %, evaluated on the 25 %.
- elpv_unseen: the same test 25 %, profile fit on 50 functional + 50 defective cells of the 75 %.
- synthetic-loc: scratches / spots / cut-paste (edge.eval.synthetic) pasted on held-out nominal images (textile test
  nominal, ELPV test cells with probability 0), each line's profile calibrated on 50 good train images only.
Every test frame is encoded once and goes through `Inspector.inspect_embedding`, the daemon's own path; the ablation
scores (zero-shot / few-shot / both / + global / + head) are recomputed from the same embedding.
`--quick` draws a small seeded subset of every set (CI).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from edge.datasets import ElpvCell, elpv_per_class, elpv_split, textile_split
from edge.eval import plots
from edge.eval.boxes import iou, mask_box
from edge.eval.failure import SCORERS, failure_figures
from edge.eval.synthetic import KINDS, VOCAB_CLASS, make_defect
from edge.fit.calibrate import DEFAULT_BANK_SIZE, calibrate
from edge.grounding.anomaly import combine, global_zero_shot_score, raw_scores, smooth
from edge.grounding.classifier import frame_features
from edge.grounding.regions import location_word
from edge.images import read_image
from edge.inspect.inspector import Inspection, Inspector
from edge.profile.line_profile import LineProfile
from edge.stats import accuracy, auroc, roc_curve
from edge.vlm.pack import ModelPack
from edge.vlm.runtime import ImageEmbedding
from edge.vlm.vocabulary import load_vocabulary

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[Sequence[Any], str], Iterable[Any]]
DATASETS = ("textile", "elpv", "synthetic-loc")
IOU_MATCH = 0.3

# published anchors and the goals, written next to every figure in report.md
ANCHORS: dict[str, str] = {
    "elpv.accuracy": "goal ≥ 0.91; Deitsch 2019 CNN 0.8842, SVM 0.8244; ResNet152 0.9013",
    "elpv_unseen.accuracy": "goal ≥ 0.88 (50 labelled cells per class)",
    "textile.auroc": "goal ≥ 0.98 with ≤ 50 shots per class; Megahed 2025 CLIP ViT-L/14 0.996 at 50 shots, "
                     "ViT-B/32 ~0.70",
    "textile.auroc_local": "(no published split)",
    "textile.auroc_global": "(no published split)",
    "synthetic_loc.pixel_auroc": "goal ≥ 0.95; WinCLIP+ 4-shot MVTec 0.962, PatchCore 0.981",
    "synthetic_loc.region_recall": "IoU ≥ 0.3 (no anchor)",
    "synthetic_loc.region_precision": "IoU ≥ 0.3 (no anchor)",
    "captions.class_accuracy": "(no anchor)",
    "captions.location_accuracy": "(no anchor; 3×3 grid words)",
    "elpv.failure.learned.auroc": "goal ≥ 0.90 and ≥ MSP + 0.05; ViLU lifts MCM by 0.08–0.33 (ICCV 2025)",
    "elpv.failure.msp.auroc": "max-softmax baseline, same decisions",
    "elpv.routing.coverage_at_1pct": "goal ≥ 0.60 (threshold chosen on the calibration half)",
    "elpv.routing.realised_risk": "the profile's own risk threshold (α in routing.alpha) on the test split",
}
GOALS = {"elpv.accuracy": 0.91, "elpv_unseen.accuracy": 0.88, "textile.auroc": 0.98, "synthetic_loc.pixel_auroc": 0.95,
         "elpv.failure.learned.auroc": 0.90, "elpv.routing.coverage_at_1pct": 0.60}


def _identity(items: Sequence[T], _label: str) -> Iterable[T]:
    return items


def progress_lines(items: Sequence[T], label: str) -> Iterator[T]:
    """Progress on stderr: redrawn in place on a terminal, one line per ~10 % otherwise (logs, CI)."""
    total = len(items)
    started = time.monotonic()
    tty = sys.stderr.isatty()
    step = max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i == total or (tty or i % step == 0):
            end = "\n" if (i == total or not tty) else "\r"
            sys.stderr.write(f"  {label}: {i}/{total} ({time.monotonic() - started:.1f} s){end}")
            sys.stderr.flush()


@dataclass
class Scored:
    """One evaluated frame: the inspection plus the ablation scores from the same embedding."""

    truth: int  # 1 = defect
    group: str
    inspection: Inspection
    ablation: dict[str, float] = field(default_factory=dict)


@dataclass
class Context:
    pack: ModelPack
    out: Path
    seed: int
    quick: bool
    provider: str
    progress: Progress
    profiles: dict[str, str] = field(default_factory=dict)
    defect_rates: dict[str, float | None] = field(default_factory=dict)  # what each profile was told of its line
    bank_size: dict[int, int] | None = None  # memory-bank coreset size per stride (None: calibrate's default)

    def fit(self, name: str, good: list[Path], defects: list[Path] | None = None,
            defect_rate: float | None = None) -> Inspector:
        profile_dir = self.out / "profiles" / name
        shutil.rmtree(profile_dir, ignore_errors=True)
        profile = calibrate(self.pack, load_vocabulary(), good, f"eval-{name}", profile_dir, defects=defects,
                            provider=self.provider, seed=self.seed, bank_size=self.bank_size,
                            progress=lambda items, label: self.progress(list(items), label),
                            defect_rate=defect_rate)
        self.profiles[name] = f"{profile.describe()} ({profile.metrics['seconds']} s)"
        self.defect_rates[name] = None if defect_rate is None else round(defect_rate, 4)
        return Inspector(self.pack, profile, self.provider)

    def subset(self, items: list[T], n: int) -> list[T]:
        if not self.quick or len(items) <= n:
            return items
        idx = np.random.default_rng(self.seed).permutation(len(items))[:n]
        return [items[i] for i in sorted(idx)]


def ablation_scores(inspector: Inspector, emb: ImageEmbedding, inspection: Inspection) -> dict[str, float]:
    profile: LineProfile = inspector.profile
    text, scale = inspector.text_bank, inspector.pack.logit_scale
    raw = inspection.raw_scores or raw_scores(emb, profile.bank, text.class_embeddings, scale)
    out = {
        "zero-shot map": float(smooth(combine(raw, profile.patch_stats, {"zero": 1.0})).max()),
        "few-shot map": float(smooth(combine(raw, profile.patch_stats, {"few": 1.0})).max()),
        "both (map)": float(inspection.anomaly_map.max()),
        "global zero-shot": global_zero_shot_score(emb.global_, text.class_embeddings, scale),
    }
    out["both + global"] = profile.frame_score(out["both (map)"], out["global zero-shot"])[0]
    if profile.head is not None:
        features = frame_features(emb, inspection.anomaly_map, out["global zero-shot"])
        out["head"] = float(profile.head.predict(features)[0])
    return out


def score_files(ctx: Context, inspector: Inspector, items: list[tuple[Path, int, str]], label: str) -> list[Scored]:
    out = []
    for path, truth, group in ctx.progress(items, label):
        bgr = read_image(path)
        emb = inspector.image_encoder.encode(bgr)
        inspection = inspector.inspect_embedding(emb, bgr.shape[1], bgr.shape[0])
        out.append(Scored(truth, group, inspection, ablation_scores(inspector, emb, inspection)))
    return out


def _binary_figures(scored: list[Scored]) -> dict[str, Any]:
    truth = np.array([s.truth for s in scored])
    predicted = np.array([int(s.inspection.verdict != "good") for s in scored])
    score = np.array([s.inspection.anomaly_score for s in scored])
    ablation = {name: round(auroc(truth, np.array([s.ablation[name] for s in scored])), 4)
                for name in scored[0].ablation}
    return {"accuracy": round(accuracy(truth, predicted), 4), "auroc": round(auroc(truth, score), 4),
            "n": len(scored), "ablation_auroc": ablation,
            "confusion": [[int(((truth == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]}


def _failure_section(ctx: Context, name: str, scored: list[Scored], inspector: Inspector) -> dict[str, Any]:
    """Issue 6's failure-prediction and routing figures on the same decisions (edge.eval.failure)."""
    truth = np.array([s.truth for s in scored])
    decided = np.array([int(s.inspection.verdict != "good") for s in scored])
    names = sorted({k for s in scored for k in s.inspection.uncertainty.scores})
    scores = {k: np.array([s.inspection.uncertainty.scores.get(k, np.nan) for s in scored]) for k in names}
    scores = {k: v for k, v in scores.items() if np.isfinite(v).all()}
    if "learned" not in scores and "msp" not in scores:
        return {}
    figures = failure_figures(truth, decided, scores, inspector.profile.routing, ctx.out, name, ctx.seed)
    fitted = inspector.profile.metrics
    figures["failure"]["calibration"] = {  # what calibrate measured out of fold on the labelled rows
        k: fitted[k] for k in ("failure_inputs", "failure_oof_auroc_by_inputs", "failure_oof_auroc_msp",
                               "oof_accuracy", "rows") if k in fitted}
    return figures


def _ood_section(ctx: Context, inspector: Inspector, scored: list[Scored], foreign: list[Path]) -> dict[str, Any]:
    """The line's OoD detector on its own test frames (false alarms) and on another product's images."""
    if inspector.profile.ood is None:
        return {}
    own = np.array([s.inspection.uncertainty.ood_distance for s in scored])
    rng = np.random.default_rng(ctx.seed)
    # a covered lens, a lighting failure, sensor noise: none of them a product the line knows
    frames = [np.zeros((300, 300, 3), np.uint8), np.full((300, 300, 3), 255, np.uint8),
              rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)]
    frames += [read_image(p) for p in ctx.progress(foreign, "OoD: foreign frames")]
    other = [inspector.inspect(bgr).uncertainty.ood_distance for bgr in frames]
    far = np.array(other)
    thr = inspector.profile.ood.threshold
    return {"threshold": round(thr, 4), "false_alarm_rate": round(float((own > thr).mean()), 4),
            "detection_rate": round(float((far > thr).mean()), 4) if far.size else float("nan"),
            "auroc": round(auroc(np.r_[np.zeros(own.size), np.ones(far.size)], np.r_[own, far]), 4),
            "foreign": f"{len(foreign)} textile test images + black, white and noise frames on the ELPV line"}


def _roc_plot(scored: list[Scored], title: str, path: Path) -> None:
    truth = np.array([s.truth for s in scored])
    curves = {}
    for name in scored[0].ablation:
        values = np.array([s.ablation[name] for s in scored])
        fpr, tpr = roc_curve(truth, values)
        curves[name] = (fpr, tpr, auroc(truth, values))
    plots.roc_png(curves, title, path)


def textile_shots(seed: int, quick: bool) -> tuple[list[Path], list[Path]]:
    """The textile line's labelled set, drawn from the train split with the seed: 50 good images and 25 local + 25
    global defects (12 and 6 + 6 with `quick`)."""
    rng = np.random.default_rng(seed)
    train = textile_split("train")
    shots = 12 if quick else 50
    good = [p for p, lab in train if lab == "nominal"]
    good = [good[i] for i in sorted(rng.permutation(len(good))[:shots])]
    defects: list[Path] = []
    for kind in ("local", "global"):
        pool = [p for p, lab in train if lab == kind]
        defects += [pool[i] for i in sorted(rng.permutation(len(pool))[:shots // 2])]
    return good, defects


def eval_textile(ctx: Context) -> dict[str, Any]:
    good, defects = textile_shots(ctx.seed, ctx.quick)
    # the line's defect rate as its engineer would state it: the share in the train split (half)
    train = textile_split("train")
    inspector = ctx.fit("textile", good, defects, defect_rate=sum(lab != "nominal" for _, lab in train) / len(train))
    test = [(p, int(lab != "nominal"), lab) for p, lab in textile_split("test")]
    test = ctx.subset(test, 45)
    scored = score_files(ctx, inspector, test, "textile test")
    figures = _binary_figures(scored)
    for kind in ("local", "global"):
        part = [s for s in scored if s.group in ("nominal", kind)]
        figures[f"auroc_{kind}"] = round(auroc(np.array([s.truth for s in part]),
                                               np.array([s.inspection.anomaly_score for s in part])), 4)
        figures[f"ablation_auroc_{kind}"] = {
            name: round(auroc(np.array([s.truth for s in part]), np.array([s.ablation[name] for s in part])), 4)
            for name in part[0].ablation}
    # the verdict's class on real defects the daemon calls defective: local → spot, global → texture
    expected = {"local": "spot", "global": "texture"}
    called = [s for s in scored if s.truth and s.inspection.verdict != "good"]
    figures["defect_class_accuracy"] = round(
        accuracy(np.array([expected[s.group] for s in called]), np.array([s.inspection.verdict for s in called])), 4
    ) if called else float("nan")
    # every verdict class against the kind of part: what the captions call local and global defects
    classes = inspector.text_bank.classes
    groups = ["nominal", "local", "global"]
    matrix = np.array([[sum(1 for s in scored if s.group == g and s.inspection.verdict == c) for c in classes]
                       for g in groups])
    figures["class_confusion"] = {"rows": groups, "cols": classes, "counts": matrix.tolist()}
    plots.confusion_png(matrix, groups, "textile verdict classes", ctx.out / "class_confusion_textile.png", classes)
    figures["shots"] = {"good": len(good), "defect": len(defects)}
    figures.update(_failure_section(ctx, "textile", scored, inspector))
    _roc_plot(scored, "textile test: nominal vs defect", ctx.out / "roc_textile.png")
    plots.confusion_png(np.array(figures["confusion"]), ["good", "defect"], "textile",
                        ctx.out / "confusion_textile.png")
    return figures


def _elpv_items(cells: list[ElpvCell]) -> list[tuple[Path, int, str]]:
    return [(c.path, int(c.defective), c.label) for c in cells]


def eval_elpv(ctx: Context) -> dict[str, Any]:
    train, test = elpv_split(ctx.seed)
    # the line's defect rate as its engineer would state it: the share of defective cells in the line's history
    # (the 75 % fit part), for both profiles — the unseen line's 50 + 50 labelled cells are a set-up mix, not a rate
    defect_rate = sum(c.defective for c in train) / len(train)
    test = ctx.subset(test, 60)
    fit_cells = ctx.subset(train, 60)
    results: dict[str, Any] = {}
    for name, cells in (("elpv", fit_cells), ("elpv_unseen", elpv_per_class(train, 12 if ctx.quick else 50,
                                                                             ctx.seed))):
        inspector = ctx.fit(name, [c.path for c in cells if not c.defective], [c.path for c in cells if c.defective],
                            defect_rate=defect_rate)
        scored = score_files(ctx, inspector, _elpv_items(test), f"{name} test")
        figures = _binary_figures(scored)
        figures["accuracy_by_label"] = {
            label: round(accuracy(np.array([s.truth for s in scored if s.group == label]),
                                  np.array([int(s.inspection.verdict != "good") for s in scored
                                            if s.group == label])), 4)
            for label in ("0", "0.33", "0.67", "1")}
        figures["fit_images"] = {"good": sum(not c.defective for c in cells), "defect": sum(c.defective for c in cells)}
        figures.update(_failure_section(ctx, name, scored, inspector))
        if name == "elpv":
            foreign = ctx.subset([p for p, _ in textile_split("test")], 10)[:10 if ctx.quick else 60]
            figures["ood"] = _ood_section(ctx, inspector, scored, foreign)
        _roc_plot(scored, f"{name} test: functional vs defective", ctx.out / f"roc_{name}.png")
        plots.confusion_png(np.array(figures["confusion"]), ["good", "defect"], name, ctx.out / f"confusion_{name}.png")
        results[name] = figures
    return results


def eval_synthetic(ctx: Context) -> dict[str, Any]:
    rng = np.random.default_rng(ctx.seed)
    n_good = 12 if ctx.quick else 50
    textile_train = [p for p, lab in textile_split("train") if lab == "nominal"]
    textile_test = [p for p, lab in textile_split("test") if lab == "nominal"]
    elpv_train, elpv_test = elpv_split(ctx.seed)
    sources = {
        "textile": ([textile_train[i] for i in sorted(rng.permutation(len(textile_train))[:n_good])], textile_test),
        "elpv": ([c.path for c in elpv_per_class(elpv_train, n_good, ctx.seed) if not c.defective],
                 [c.path for c in elpv_test if c.probability == 0.0]),
    }
    pixel_scores: list[np.ndarray] = []
    pixel_truth: list[np.ndarray] = []
    pixel_line: list[str] = []
    n_truth = n_found_truth = n_regions = n_regions_match = 0
    class_hits: list[bool] = []
    class_pairs: list[tuple[str, str]] = []  # (pasted kind, caption class of the best-matching region)
    location_hits: list[bool] = []
    per_kind: dict[str, list[bool]] = {k: [] for k in KINDS}
    for line, (good, held_out) in sources.items():
        inspector = ctx.fit(f"synthetic-{line}", good)
        held_out = ctx.subset(held_out, 9)[: (9 if ctx.quick else 150)]
        for i, path in enumerate(ctx.progress(held_out, f"synthetic-loc {line}")):
            image = read_image(path)
            donor = read_image(held_out[(i + 1) % len(held_out)])
            defect = make_defect(image, donor, KINDS[i % len(KINDS)], rng)
            h, w = image.shape[:2]
            result = inspector.inspect(defect.image)
            up = cv2.resize(result.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)
            pixel_scores.append(up[::2, ::2].ravel())
            pixel_truth.append(defect.mask[::2, ::2].ravel())
            pixel_line.append(line)
            truth_box = mask_box(defect.mask)
            overlaps = [iou((r.x, r.y, r.w, r.h), truth_box) for r in result.regions]
            n_truth += 1
            n_regions += len(result.regions)
            n_regions_match += sum(o >= IOU_MATCH for o in overlaps)
            found = bool(overlaps) and max(overlaps) >= IOU_MATCH
            n_found_truth += found
            per_kind[defect.kind].append(found)
            if found:
                best = result.regions[int(np.argmax(overlaps))]
                ys, xs = np.nonzero(defect.mask)
                class_hits.append(best.defect_class == VOCAB_CLASS[defect.kind])
                class_pairs.append((defect.kind, best.defect_class))
                location_hits.append(best.location == location_word(float(xs.mean()), float(ys.mean()), w, h))
            if i < 3:
                plots.example_png(defect.image, result.anomaly_map, result.regions,
                                  f"{line} synthetic {defect.kind}: verdict {result.verdict} "
                                  f"(score {result.anomaly_score:.2f} / thr {result.anomaly_threshold:.2f})",
                                  defect.mask, ctx.out / f"example_{line}_{i}_{defect.kind}.png")
    return {
        "synthetic_loc": {
            "pixel_auroc": round(auroc(np.concatenate(pixel_truth), np.concatenate(pixel_scores)), 4),
            "pixel_auroc_by_line": {line: round(auroc(*(np.concatenate([v for v, n in zip(values, pixel_line,
                                                                                       strict=True) if n == line])
                                                        for values in (pixel_truth, pixel_scores))), 4)
                                    for line in sources},
            "region_recall": round(n_found_truth / max(n_truth, 1), 4),
            "region_precision": round(n_regions_match / n_regions, 4) if n_regions else 0.0,
            "recall_by_kind": {k: round(float(np.mean(v)), 4) if v else float("nan") for k, v in per_kind.items()},
            "n": n_truth, "regions": n_regions,
        },
        "captions": {
            "class_accuracy": round(float(np.mean(class_hits)), 4) if class_hits else 0.0,
            "location_accuracy": round(float(np.mean(location_hits)), 4) if location_hits else 0.0,
            "n": len(class_hits),
            "class_confusion": _pair_counts(class_pairs, list(KINDS), sorted(set(VOCAB_CLASS.values()) | {
                c for _, c in class_pairs}), ctx.out / "class_confusion_synthetic.png"),
            "note": "over synthetic defects whose region was found (IoU ≥ 0.3): class of the best caption vs the "
                    "pasted kind (scratch→scratch, spot→spot, cut-paste→patch); location word vs mask centroid",
        },
    }


def _pair_counts(pairs: list[tuple[str, str]], rows: list[str], cols: list[str], png: Path) -> dict[str, Any]:
    matrix = np.array([[sum(1 for a, b in pairs if a == r and b == c) for c in cols] for r in rows])
    plots.confusion_png(matrix, rows, "synthetic defects: caption class", png, cols)
    return {"rows": rows, "cols": cols, "counts": matrix.tolist()}


def run_eval(pack: ModelPack, datasets: Sequence[str], out: Path, quick: bool = False, seed: int = 0,
             provider: str = "cpu", progress: Progress = _identity, loop: bool = False,
             loop_every: int = 200, bank_size: dict[int, int] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(pack, out, seed, quick, provider, progress, bank_size=bank_size)
    report: dict[str, Any] = {}
    if "textile" in datasets:
        report["textile"] = eval_textile(ctx)
    if "elpv" in datasets:
        report.update(eval_elpv(ctx))
        if loop:
            from edge.eval.loop import run_loop

            report["elpv"]["loop"] = run_loop(ctx, loop_every)
    if "synthetic-loc" in datasets:
        report.update(eval_synthetic(ctx))
    report["config"] = {
        "seed": seed, "quick": quick, "datasets": list(datasets), "pack_version": pack.version, "loop": loop,
        "bank_size": {str(k): v for k, v in (bank_size or DEFAULT_BANK_SIZE).items()},
        "profile_versions": ctx.profiles, "provider": provider,
        "defect_rates": {"values": ctx.defect_rates,
                         "note": "the line's defect rate each profile was calibrated with (`lineside calibrate "
                                 "--defect-rate`): the share of defects in the line's train split; thresholds "
                                 "maximise accuracy at that rate (None: balanced accuracy)"},
        "splits": {
            "textile": "edge.datasets.textile_split: calibrate on train (50 nominal + 25 local + 25 global, seeded), "
                       "evaluate on test",
            "elpv": "edge.datasets.elpv_split(seed): stratified by (probability, type), 75 % fit / 25 % test; "
                    "defect = probability ≥ 0.5",
            "elpv_unseen": "edge.datasets.elpv_per_class(train, 50, seed): 50 functional + 50 defective cells",
            "synthetic-loc": "edge.eval.synthetic on textile test nominal and ELPV test probability-0 cells; "
                             "profiles from 50 good train images",
        },
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(report_markdown(report))
    return report


def _get(report: dict[str, Any], dotted: str) -> Any:
    node: Any = report
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def report_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"# lineside eval — {', '.join(cfg['datasets'])}{' (quick subset)' if cfg['quick'] else ''}", "",
             f"pack `{cfg['pack_version']}`, seed {cfg['seed']}, {report['seconds']} s. "
             "Reproduce: `lineside eval --dataset all --out DIR`.", "",
             "| figure | value | published anchor / goal | gap to goal |", "|---|---|---|---|"]
    for key, anchor in ANCHORS.items():
        value = _get(report, key)
        if value is None:
            continue
        goal = GOALS.get(key)
        gap = "" if goal is None else ("met" if value >= goal else f"{value - goal:+.3f}")
        lines.append(f"| `{key}` | {value:.4f} | {anchor} | {gap} |")
    if _get(report, "elpv.accuracy_by_label"):
        lines += ["", "ELPV accuracy by expert label (0 and ⅓ count as functional, ⅔ and 1 as defective):", "",
                  "| profile | 0 | 0.33 | 0.67 | 1 |", "|---|---|---|---|---|"]
        for name in ("elpv", "elpv_unseen"):
            by = report[name]["accuracy_by_label"]
            lines.append(f"| {name} | " + " | ".join(f"{by[k]:.3f}" for k in ("0", "0.33", "0.67", "1")) + " |")
    lines += ["", "## Ablation (image AUROC of each frame score on the same test frames)", ""]
    rows: list[tuple[str, dict[str, float]]] = [
        (name, report[name]["ablation_auroc"]) for name in ("textile", "elpv", "elpv_unseen") if name in report]
    if "textile" in report:
        rows += [("textile local", report["textile"]["ablation_auroc_local"]),
                 ("textile global", report["textile"]["ablation_auroc_global"])]
    if rows:
        names = list(dict.fromkeys(k for _, r in rows for k in r))
        lines += ["| set | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{r[k]:.4f}" if k in r else "—" for k in names) + " |"
                  for name, r in rows]
    lines += _failure_markdown(report)
    lines += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def _failure_markdown(report: dict[str, Any]) -> list[str]:
    sets = [name for name in ("elpv", "elpv_unseen", "textile") if "failure" in report.get(name, {})]
    if not sets:
        return []
    lines = ["", "## Failure prediction and routing (same decisions for every scorer)", "",
             "Failure AUROC / FPR at 95 % TPR / AURC (wrong decision = positive; lower AURC is better):", "",
             "| set | " + " | ".join(SCORERS) + " |", "|---" * (len(SCORERS) + 1) + "|"]
    for name in sets:
        f = report[name]["failure"]
        lines.append(f"| {name} | " + " | ".join(
            f"{f[s]['auroc']:.3f} / {f[s]['fpr95']:.2f} / {f['aurc_by_scorer'][s]:.3f}" if s in f else "—"
            for s in SCORERS) + " |")
    lines += ["", "Coverage at selective risk (test halves, threshold from the calibration halves, mean of "
              f"{report[sets[0]]['routing']['splits']} splits) and the profile's own risk threshold on the test "
              "split:", "", "| set | decisions wrong | coverage @1 % | @5 % | profile policy | its coverage | "
              "realised risk | bound held (share of splits) |", "|---|---|---|---|---|---|---|---|"]
    for name in sets:
        r, e = report[name]["routing"], report[name]
        policy = f"{r['policy']} α={r['alpha']}, δ={r['delta']}" if "policy" in r else "—"
        held = r.get("bounded", {}).get("risk_within_alpha_share", float("nan"))
        lines.append(f"| {name} | {1 - e['accuracy']:.3f} | "
                     f"{r['coverage_at_1pct']:.3f} | {r['coverage_at_5pct']:.3f} | {policy} | "
                     f"{r.get('coverage', float('nan')):.3f} | {r.get('realised_risk', float('nan')):.3f} | "
                     f"{held:.2f} |")
    for name in sets:
        cal = report[name]["failure"].get("calibration") or {}
        if cal.get("failure_inputs"):
            lines.append(f"\n{name}: calibrate kept the `{cal.get('failure_inputs')}` predictor (out-of-fold "
                         f"failure AUROC by inputs {cal.get('failure_oof_auroc_by_inputs')}, MSP "
                         f"{cal.get('failure_oof_auroc_msp')}, on {cal.get('rows')} labelled rows).")
    if "ood" in report.get("elpv", {}) and report["elpv"]["ood"]:
        o = report["elpv"]["ood"]
        lines += ["", f"OoD on the ELPV line: {o['false_alarm_rate']:.3f} of its test cells flagged, "
                  f"{o['detection_rate']:.3f} of foreign frames ({o['foreign']}), AUROC {o['auroc']:.3f}."]
    loop = report.get("elpv", {}).get("loop")
    if loop:
        lines += ["", f"## Review loop (ELPV stream of {loop['stream']} cells, retrain every {loop['every']} "
                  f"reviews, routing risk α = {loop['alpha_routing']})", "",
                  "| round | reviews | rows | workload | accuracy | failure AUROC | coverage @1 % | @5 % |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in loop["rounds"]:
            lines.append(f"| {r['round']} | {r['reviews']} | {r['rows']} | {r['workload']:.2f} | {r['accuracy']:.3f} "
                         f"| {r['failure_auroc']:.3f} | {r['coverage_at_1pct']:.3f} | {r['coverage_at_5pct']:.3f} |")
    return lines
