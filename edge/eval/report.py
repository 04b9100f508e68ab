"""report.md: every figure next to its published anchor and the goal, with the gap; ablation, failure and routing
tables."""

from __future__ import annotations

import json
from itertools import zip_longest
from typing import Any

import numpy as np

from edge.eval.failure import SCORERS

# published anchors and the goals, written next to every figure in report.md
ANCHORS: dict[str, str] = {
    "elpv.accuracy": "goal ≥ 0.91; Deitsch 2019 CNN 0.8842, SVM 0.8244; ResNet152 0.9013",
    "elpv.accuracy_by_label.0.67": "goal ≥ 0.75 (cells the experts gave ⅔)",
    "elpv.accuracy_by_label.1": "goal ≥ 0.75 (cells the experts gave 1)",
    "elpv_unseen.accuracy": "goal ≥ 0.88 (50 labelled cells per class)",
    "textile.auroc": "goal ≥ 0.99 with ≤ 50 shots per class; Megahed 2025 CLIP ViT-L/14 0.996 at 50 shots, "
                     "ViT-B/32 ~0.70",
    "textile.accuracy": "goal ≥ 0.95",
    "textile.auroc_local": "(no published split)",
    "textile.auroc_global": "(no published split)",
    "synthetic_loc.pixel_auroc": "goal ≥ 0.97 (mean of the lines); WinCLIP+ 4-shot MVTec 0.962, PatchCore 0.981",
    "synthetic_loc.pro": "goal ≥ 0.90 (per-region overlap to FPR 0.3, MVTec AD; mean of the lines); WinCLIP+ "
                         "4-shot MVTec 0.890, PatchCore ~0.93",
    "synthetic_loc.region_recall": "goal ≥ 0.80 at IoU ≥ 0.3 (no anchor)",
    "synthetic_loc.region_precision": "goal ≥ 0.80 at IoU ≥ 0.3 (no anchor)",
    "synthetic_loc.recall_by_kind.spot": "goal ≥ 0.70",
    "synthetic_loc.good_false_alarm_rate": "the same held-out frames before the paste, decided defective (lower is "
                                           "better; no goal)",
    "captions.class_accuracy": "(no anchor)",
    "captions.location_accuracy": "(no anchor; 3×3 grid words)",
    "elpv.failure.learned.auroc": "goal ≥ 0.90 and ≥ every baseline + 0.03; ViLU lifts MCM by 0.08–0.33 (ICCV 2025)",
    "elpv.failure.msp.auroc": "max-softmax baseline, same decisions",
    "elpv.routing.coverage_at_1pct": "goal ≥ 0.60 (threshold chosen on the calibration half)",
    "elpv.routing.realised_risk": "the profile's own risk threshold (α in routing.alpha) on the test split",
    "elpv.loop.escaped_per_1000": "goal ≤ 1 in the last round (defects decided good alone, per 1,000 frames)",
}

# each figure's goal: (">=", v) at least v, ("<=", v) at most v
GOALS: dict[str, tuple[str, float]] = {
    "elpv.accuracy": (">=", 0.91), "elpv.accuracy_by_label.0.67": (">=", 0.75),
    "elpv.accuracy_by_label.1": (">=", 0.75), "elpv_unseen.accuracy": (">=", 0.88),
    "textile.auroc": (">=", 0.99), "textile.accuracy": (">=", 0.95), "synthetic_loc.pixel_auroc": (">=", 0.97),
    "synthetic_loc.pro": (">=", 0.90), "synthetic_loc.region_recall": (">=", 0.80),
    "synthetic_loc.region_precision": (">=", 0.80), "synthetic_loc.recall_by_kind.spot": (">=", 0.70),
    "elpv.failure.learned.auroc": (">=", 0.90), "elpv.routing.coverage_at_1pct": (">=", 0.60),
    "elpv.loop.escaped_per_1000": ("<=", 1.0)}


def gap_to_goal(key: str, value: float) -> str:
    if key not in GOALS:
        return ""
    op, goal = GOALS[key]
    ok = value >= goal if op == ">=" else value <= goal
    return "met" if ok else f"{value - goal:+.3f}"


def _get(report: dict[str, Any], dotted: str) -> Any:
    """The figure at a dotted path; keys may hold dots themselves ("accuracy_by_label" → "0.67")."""
    node: Any = report
    parts = dotted.split(".")
    while parts:
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if isinstance(node, dict) and key in node:
                node, parts = node[key], parts[n:]
                break
        else:
            return None
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def seeds_markdown(reports: dict[int, dict[str, Any]]) -> str:
    """The headline figures over several seeds (each seed's splits, shots and synthetic defects): mean ± sd."""
    seeds = sorted(reports)
    lines = [f"## Headline figures over seeds {', '.join(map(str, seeds))} (mean ± sd)", "",
             "| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | gap of the mean to goal |",
             "|---" * (len(seeds) + 3) + "|"]
    for key in ANCHORS:
        values = [_get(reports[s], key) for s in seeds]
        if any(v is None for v in values):
            continue
        mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        lines.append(f"| `{key}` | " + " | ".join(f"{v:.4f}" for v in values)
                     + f" | {mean:.4f} ± {sd:.4f} | {gap_to_goal(key, mean)} |")
    return "\n".join(lines) + "\n"


def _ran_on(cfg: dict[str, Any]) -> str:
    """When and where a run was made, as its time figures need it said (absent from older reports)."""
    m = cfg.get("machine")
    if not m:
        return ""
    return f" from {cfg['started']} on {m['cores']} cores of {m['cpu']} ({m['cpu_target']})"


def report_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"# lineside eval — {', '.join(cfg['datasets'])}{' (quick subset)' if cfg['quick'] else ''}", "",
             f"pack `{cfg['pack_version']}`, seed {cfg['seed']}, {report['seconds']} s{_ran_on(cfg)}. "
             f"Reproduce: `{cfg.get('command', 'lineside eval --dataset all --out DIR')}`.", "",
             "| figure | value | published anchor / goal | gap to goal |", "|---|---|---|---|"]
    for key, anchor in ANCHORS.items():
        value = _get(report, key)
        if value is None:
            continue
        lines.append(f"| `{key}` | {value:.4f} | {anchor} | {gap_to_goal(key, value)} |")
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
    lines += _loop_markdown(report)
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
    return lines


def _loop_markdown(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    loop = report.get("elpv", {}).get("loop")
    if loop and "rounds" in loop:
        lines += ["", f"## Review loop (ELPV stream of {loop['stream']} cells, retrain every {loop['every']} "
                  f"reviews, routing risk α = {loop['alpha_routing']})", "",
                  "| round | reviews | rows | workload | escaped / 1,000 | accuracy | failure AUROC | coverage @1 % "
                  "| @5 % |", "|---|---|---|---|---|---|---|---|---|"]
        for r in loop["rounds"]:
            lines.append(f"| {r['round']} | {r['reviews']} | {r['rows']} | {r['workload']:.2f} "
                         f"| {r.get('escaped_per_1000', float('nan')):.1f} | {r['accuracy']:.3f} "
                         f"| {r['failure_auroc']:.3f} | {r['coverage_at_1pct']:.3f} | {r['coverage_at_5pct']:.3f} |")
        noisy = loop.get("noisy")
        if noisy:
            arms = (noisy["answers"], noisy["recheck"])
            lines += ["", f"The same loop with an operator who answers {noisy['operator_error']:.0%} of frames wrong: "
                      "as answered, and with the labels to check answered again after each retraining "
                      "(`lineside train --recheck`).", "",
                      "| round | reviews | wrong answers in the rows | accuracy | with recheck: asked again | wrong "
                      "answers | accuracy |", "|---|---|---|---|---|---|---|"]
            # the arms route differently and may retrain a different number of times: every round of each is shown
            for a, b in zip_longest(*(arm["rounds"] for arm in arms)):
                left = (f"{a['round']} | {a['reviews']} | {a.get('wrong_answers', 0)} | {a['accuracy']:.3f}" if a
                        else f"{b['round']} | — | — | —")
                right = f"{b.get('asked_again', 0)} | {b.get('wrong_answers', 0)} | {b['accuracy']:.3f}" if b \
                    else "— | — | —"
                lines.append(f"| {left} | {right} |")
    return lines
