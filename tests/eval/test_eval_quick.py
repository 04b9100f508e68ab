"""`lineside eval --quick` end to end on the real data sets (a small seeded subset), and the full run (slow)."""

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_lineside

KEYS = ("elpv.accuracy", "elpv.accuracy_by_label", "elpv_unseen.accuracy", "textile.auroc", "textile.auroc_local",
        "textile.auroc_global", "synthetic_loc.pixel_auroc", "synthetic_loc.region_recall",
        "synthetic_loc.region_precision", "synthetic_loc.good_false_alarm_rate", "captions.class_accuracy",
        "captions.location_accuracy", "config",
        "seconds", "elpv.failure.aurc", "elpv.routing.coverage_at_1pct", "elpv.routing.coverage_at_5pct",
        "elpv.routing.realised_risk", "elpv.routing.alpha", "elpv.loop.coverage_at_1pct_by_round")
SCORERS = ("learned", "msp", "margin", "entropy", "mcm", "doctor", "energy")


def _get(report: dict, dotted: str) -> object:
    node: object = report
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"report.json lacks {dotted}"
        node = node[key]
    return node


def _check_report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    for key in KEYS:
        value = _get(report, key)
        if isinstance(value, float) and key != "seconds":
            assert 0.0 <= value <= 1.0 and not math.isnan(value), (key, value)
    assert set(report["elpv"]["accuracy_by_label"]) == {"0", "0.33", "0.67", "1"}
    failure = report["elpv"]["failure"]
    for scorer in SCORERS:
        assert 0.0 <= failure[scorer]["auroc"] <= 1.0 and 0.0 <= failure[scorer]["fpr95"] <= 1.0, scorer
    loop = report["elpv"]["loop"]
    assert len(loop["coverage_at_1pct_by_round"]) == len(loop["rounds"]) >= 2
    assert [r["reviews"] for r in loop["rounds"]] == sorted(r["reviews"] for r in loop["rounds"])
    assert report["config"]["seed"] == 0 and report["config"]["pack_version"].startswith("starter@")
    assert report["config"]["profile_versions"]
    md = (out / "report.md").read_text()
    assert "Deitsch 2019" in md and "Megahed 2025" in md and "Ablation" in md
    assert "Failure prediction and routing" in md and "Review loop" in md
    for png in ("roc_textile.png", "roc_elpv.png", "confusion_textile.png", "risk_coverage_elpv.png",
                "reliability_elpv.png", "loop_elpv.png"):
        assert (out / png).stat().st_size > 1000
    assert list(out.glob("example_*.png"))
    return report


def test_quick_eval_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run_lineside("eval", "--dataset", "all", "--quick", "--loop", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    report = _check_report(out)
    assert report["config"]["quick"] is True
    # even the small subset separates good from defective textile and finds most pasted defects' pixels
    assert report["textile"]["auroc"] > 0.8
    assert report["synthetic_loc"]["pixel_auroc"] > 0.85


def test_unknown_dataset_is_refused(tmp_path: Path) -> None:
    result = run_lineside("eval", "--dataset", "mvtec", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown dataset" in result.stderr
    result = run_lineside("eval", "--dataset", "elpv", "--operator-error", "0.05", "--out", str(tmp_path))
    assert result.returncode == 2 and "--operator-error" in result.stderr and "needs --loop" in result.stderr


@pytest.mark.slow
def test_full_eval(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run_lineside("eval", "--dataset", "all", "--loop", "--out", str(out), timeout=3600)
    assert result.returncode == 0, result.stderr
    report = _check_report(out)
    assert report["textile"]["n"] == 400 and report["elpv"]["n"] == 654
    coverage = report["elpv"]["loop"]["coverage_at_5pct_by_round"]
    assert coverage[-1] > coverage[0], "reviews make the line surer"
