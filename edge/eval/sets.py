"""Each data set's evaluation (textile, ELPV and the unseen ELPV line, synthetic localisation); splits in
edge.datasets and the module doc of edge.eval.run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.datasets import ElpvCell, TextileSplit, elpv_per_class, elpv_split, textile_split
from edge.eval import plots
from edge.eval.localisation import iou, mask_box, pro_auc
from edge.eval.scoring import Context, binary_figures, failure_section, ood_section, roc_plot, score_files
from edge.eval.synthetic import KINDS, VOCAB_CLASS, make_defect
from edge.grounding.regions import location_word
from edge.images import read_image
from edge.stats import accuracy, auroc

IOU_MATCH = 0.3


# the textile line is set up from the calib split: the starter pack's heads were trained on the train split
# (models/README.md), and a real line's images are new to the pack
TEXTILE_SETUP_SPLIT: TextileSplit = "calib"


def textile_shots(seed: int, quick: bool) -> tuple[list[Path], list[Path]]:
    """The textile line's labelled set, drawn from the set-up split with the seed: 50 good images and 25 local + 25
    global defects (12 and 6 + 6 with `quick`)."""
    rng = np.random.default_rng(seed)
    setup = textile_split(TEXTILE_SETUP_SPLIT)
    shots = 12 if quick else 50
    good = [p for p, lab in setup if lab == "nominal"]
    good = [good[i] for i in sorted(rng.permutation(len(good))[:shots])]
    defects: list[Path] = []
    for kind in ("local", "global"):
        pool = [p for p, lab in setup if lab == kind]
        defects += [pool[i] for i in sorted(rng.permutation(len(pool))[:shots // 2])]
    return good, defects


def eval_textile(ctx: Context) -> dict[str, Any]:
    good, defects = textile_shots(ctx.seed, ctx.quick)
    # the line's defect rate as its engineer would state it: the share in the set-up split (half)
    setup = textile_split(TEXTILE_SETUP_SPLIT)
    inspector = ctx.fit("textile", good, defects, defect_rate=sum(lab != "nominal" for _, lab in setup) / len(setup))
    test = [(p, int(lab != "nominal"), lab) for p, lab in textile_split("test")]
    test = ctx.subset(test, 45)
    scored = score_files(ctx, inspector, test, "textile test")
    figures = binary_figures(scored)
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
    figures.update(failure_section(ctx, "textile", scored, inspector))
    roc_plot(scored, "textile test: nominal vs defect", ctx.out / "roc_textile.png")
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
        figures = binary_figures(scored)
        figures["accuracy_by_label"] = {
            label: round(accuracy(np.array([s.truth for s in scored if s.group == label]),
                                  np.array([int(s.inspection.verdict != "good") for s in scored
                                            if s.group == label])), 4)
            for label in ("0", "0.33", "0.67", "1")}
        figures["fit_images"] = {"good": sum(not c.defective for c in cells), "defect": sum(c.defective for c in cells)}
        figures.update(failure_section(ctx, name, scored, inspector))
        if name == "elpv":
            foreign = ctx.subset([p for p, _ in textile_split("test")], 10)[:10 if ctx.quick else 60]
            figures["ood"] = ood_section(ctx, inspector, scored, foreign)
        roc_plot(scored, f"{name} test: functional vs defective", ctx.out / f"roc_{name}.png")
        plots.confusion_png(np.array(figures["confusion"]), ["good", "defect"], name, ctx.out / f"confusion_{name}.png")
        results[name] = figures
    return results


def eval_synthetic(ctx: Context) -> dict[str, Any]:
    rng = np.random.default_rng(ctx.seed)
    n_good = 12 if ctx.quick else 50
    textile_setup = [p for p, lab in textile_split(TEXTILE_SETUP_SPLIT) if lab == "nominal"]
    textile_test = [p for p, lab in textile_split("test") if lab == "nominal"]
    elpv_train, elpv_test = elpv_split(ctx.seed)
    sources = {
        "textile": ([textile_setup[i] for i in sorted(rng.permutation(len(textile_setup))[:n_good])], textile_test),
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
    # the same held-out frames before the paste: a localiser that draws boxes on good parts is not a good one
    false_alarms: dict[str, list[bool]] = {line: [] for line in sources}
    good_regions: dict[str, int] = {line: 0 for line in sources}
    cuts: dict[str, dict[str, Any] | None] = {}  # where each line's regions came from (edge.fit.localiser)
    for line, (good, held_out) in sources.items():
        inspector = ctx.fit(f"synthetic-{line}", good)
        cut = inspector.profile.region_cut
        cuts[line] = cut.as_dict() if cut is not None else None
        held_out = ctx.subset(held_out, 9)[: (9 if ctx.quick else 150)]
        for i, path in enumerate(ctx.progress(held_out, f"synthetic-loc {line}")):
            image = read_image(path)
            donor = read_image(held_out[(i + 1) % len(held_out)])
            defect = make_defect(image, donor, KINDS[i % len(KINDS)], rng)
            h, w = image.shape[:2]
            clean = inspector.inspect(image)
            false_alarms[line].append(clean.verdict != "good")
            good_regions[line] += len(clean.regions)
            result = inspector.inspect(defect.image)
            shown = result.anomaly_map if result.region_map is None else result.region_map  # what regions come from
            up = cv2.resize(shown, (w, h), interpolation=cv2.INTER_LINEAR)
            pixel_scores.append(up[::2, ::2])
            pixel_truth.append(defect.mask[::2, ::2])
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
                plots.example_png(defect.image, shown, result.regions,
                                  f"{line} synthetic {defect.kind}: verdict {result.verdict} "
                                  f"(score {result.anomaly_score:.2f} / thr {result.anomaly_threshold:.2f})",
                                  defect.mask, ctx.out / f"example_{line}_{i}_{defect.kind}.png")
    by_line_auroc, by_line_pro = {}, {}
    for line in sources:
        truth = [t for t, n in zip(pixel_truth, pixel_line, strict=True) if n == line]
        scores = [v for v, n in zip(pixel_scores, pixel_line, strict=True) if n == line]
        by_line_auroc[line] = round(auroc(np.concatenate([t.ravel() for t in truth]),
                                          np.concatenate([v.ravel() for v in scores])), 4)
        by_line_pro[line] = round(pro_auc(truth, scores), 4)
    return {
        "synthetic_loc": {
            # each line's regions come from its own map (anomaly z-scores or its line model's logits): scores of two
            # lines are not on one scale, so the headline is the mean of the lines' figures
            "pixel_auroc": round(float(np.mean(list(by_line_auroc.values()))), 4),
            "pixel_auroc_by_line": by_line_auroc,
            "pro": round(float(np.mean(list(by_line_pro.values()))), 4),
            "pro_by_line": by_line_pro,
            "region_cut_by_line": cuts,
            "region_recall": round(n_found_truth / max(n_truth, 1), 4),
            "region_precision": round(n_regions_match / n_regions, 4) if n_regions else 0.0,
            "recall_by_kind": {k: round(float(np.mean(v)), 4) if v else float("nan") for k, v in per_kind.items()},
            "n": n_truth, "regions": n_regions,
            # the held-out frames themselves, before the paste: decided defective, and the boxes drawn on them
            "good_false_alarm_rate": round(float(np.mean([a for v in false_alarms.values() for a in v])), 4),
            "good_false_alarm_rate_by_line": {k: round(float(np.mean(v)), 4) for k, v in false_alarms.items() if v},
            "good_regions": sum(good_regions.values()),
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
