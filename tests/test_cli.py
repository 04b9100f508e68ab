"""What a line engineer sees when something is wrong: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from edge.tools.net import free_port
from tests.conftest import PACK, REPO, line_config, run_lineside


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_bad_config_key(tmp_path: Path) -> None:
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    data = yaml.safe_load(config.read_text())
    data["line"]["routing"]["review_treshold"] = 0.4
    config.write_text(yaml.safe_dump(data))
    _assert_one_line_error(run_lineside("run", "--config", str(config)), str(config),
                           "line.routing.review_treshold", "unknown key")


def test_missing_model_file(tmp_path: Path, calibrated_profile: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    (pack / "text.onnx").unlink()
    config = line_config(tmp_path, tmp_path, free_port(), free_port(), model={"pack": str(pack)})
    _assert_one_line_error(run_lineside("run", "--config", str(config)), "missing model file text.onnx")


def test_tampered_model_file(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    with open(pack / "image.onnx", "ab") as f:
        f.write(b"\0")
    config = line_config(tmp_path, tmp_path, free_port(), free_port(), model={"pack": str(pack)})
    _assert_one_line_error(run_lineside("run", "--config", str(config)), "image.onnx", "sha256")


def test_missing_profile_says_to_calibrate(tmp_path: Path) -> None:
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    _assert_one_line_error(run_lineside("run", "--config", str(config)), "lineside calibrate")


def test_unreadable_image_in_calibration_is_named_and_skipped(tmp_path: Path,
                                                              textile_images: dict[str, Path]) -> None:
    good = tmp_path / "good"
    shutil.copytree(textile_images["good"], good)
    (good / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    result = run_lineside("calibrate", "--config", str(config), "--good", str(good), "--limit", "8")
    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stderr.splitlines() if "broken.jpg" in x]
    assert "not a JPEG, PNG, BMP or TIFF" in line and "skipped" in line
    said = result.stdout.splitlines()
    assert any(x.startswith("verdict: the fused anomaly score") and "no classifier head" in x for x in said)
    assert any(x.startswith("skipped 1 unreadable image(s)") and "broken.jpg" in x for x in said)


def test_calibrate_says_what_decides_the_verdict_and_where_regions_come_from(tmp_path: Path,
                                                                           textile_images: dict[str, Path]) -> None:
    defects = tmp_path / "defects"
    defects.mkdir()
    for label in ("local", "global"):
        for path in textile_images[f"test_{label}"].iterdir():
            shutil.copy(path, defects / f"{label}_{path.name}")
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    result = run_lineside("calibrate", "--config", str(config), "--good", str(textile_images["good"]),
                          "--defects", str(defects), "--search-subspace", "--coarse-to-fine")
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()
    [verdict] = [x for x in said if x.startswith("verdict: ")]
    assert "out-of-fold" in verdict and f"{15 + len(list(defects.iterdir()))} labelled frames" in verdict
    assert verdict.startswith(("verdict: the classifier head", "verdict: the fused anomaly score"))
    [regions] = [x for x in said if x.startswith("regions: from the ")]
    assert "region F1" in regions or "few pasted defects" in regions
    [search] = [x for x in said if x.startswith("search: the memory bank at stride 8 ")]
    assert "dimensions" in search
    [coarse] = [x for x in said if x.startswith("search: coarse to fine, ")]
    assert coarse == ("search: coarse to fine, the finest stride searched at 0.125 of its patches (where the next "
                      "stride's few-shot score is highest)")
    from edge.profile.versions import load_profile

    load_profile(tmp_path / "profile")  # both at once: the graph reproduces its references, or it is refused


def test_the_choices_summary_names_the_loser_and_its_figure() -> None:
    from edge.cli.fit import choices_summary

    head_wins = choices_summary({"head_cv_accuracy": 0.91, "fused_balanced_accuracy": 0.84, "head_in_use": True,
                                 "rows": 100, "region_source": "line model", "region_f1_line_model": 0.9,
                                 "region_f1_anomaly_map": 0.4})
    assert head_wins == ["verdict: the classifier head — out-of-fold accuracy 0.910 on 100 labelled frames, "
                         "against the fused anomaly score's 0.840 (its threshold fit on them)",
                         "regions: from the line model (region F1 0.900 against the anomaly map's 0.400 on held-out "
                         "pasted defects)"]
    fused_wins = choices_summary({"head_cv_accuracy": 0.80, "fused_balanced_accuracy": 0.95, "head_in_use": False,
                                  "rows": 100, "region_source": "map", "region_f1_line_model": 0.81,
                                  "region_f1_anomaly_map": 0.82})
    assert "the classifier head's out-of-fold 0.800 is not better" in fused_wins[0]
    assert fused_wins[1].startswith("regions: from the anomaly map (region F1 0.820; the line model's 0.810")
    added = choices_summary({"region_source": "line model", "region_f1_line_model": 0.85, "region_f1_anomaly_map": 0.5,
                             "region_map_weight": 4.0,
                             "region_pixel_auroc_by_map_weight": {"0": 0.931, "2": 0.95, "4": 0.962}})
    assert added[1] == ("regions: from the line model plus 4 × the anomaly map (pixel AUROC 0.962 against the line "
                        "model's alone 0.931) (region F1 0.850 against the anomaly map's 0.500 on held-out pasted "
                        "defects)")
    one_grid = choices_summary({"region_source": "map (the pack gives one patch grid)"})
    assert one_grid[1] == "regions: from the anomaly map: the pack gives one patch grid"
    relative = choices_summary({"region_source": "line model", "region_f1_line_model": 0.875,
                                "region_f1_anomaly_map": 0.85,
                                "region_cut": "0.3 of the way down from each frame's peak (others above 2)"})
    assert relative[1].endswith("on held-out pasted defects); cut 0.3 of the way down from each frame's peak "
                                "(others above 2)")
    boxed = choices_summary({"region_source": "map", "region_f1_line_model": 0.75, "region_f1_anomaly_map": 1.0,
                             "region_cut": "above 7.82", "boxed_frames": 4, "pasted_defects": 8})
    assert boxed[1].endswith("; cut above 7.82, fitted to the operator's boxes on 4 frame(s) and 8 pasted "
                             "defect(s)")
    search = choices_summary({"search_dims": {"8": 128}, "search_agreement": {
        "16": {"64": 0.96, "96": 0.98, "128": 0.985}, "8": {"64": 0.82, "96": 0.977, "128": 0.992}}})
    assert search[-1] == ("search: the memory bank at stride 8 in 128 dimensions, its 8 nearest there compared again "
                          "in all (scores correlate 0.992 with the "
                          "full search on bank images it was built without); stride 16 in all (no subspace tried "
                          "reproduced it: best 0.985)")
    assert not any(x.startswith("search:") for x in choices_summary({"region_source": "map"}))
    suspects = [{"frame": "review:41", "label": "good", "margin": 6.25},
                {"frame": "line/defects/b.png", "label": "defect", "margin": 3.0}]
    (check,) = [x for x in choices_summary({"label_suspects": suspects}) if x.startswith("labels to check")]
    assert "review:41 (labelled good, decided defect by 6.2)" in check
    assert "line/defects/b.png (labelled defect, decided good by 3.0)" in check and "2 in the version's" in check
    assert not any(x.startswith("labels to check") for x in choices_summary({"label_suspects": []}))


def test_a_routing_that_vouches_for_nothing_says_how_far_the_labelled_frames_got() -> None:
    import numpy as np

    from edge.cli.fit import _routing_summary
    from edge.uncertainty.risk import risk_threshold

    u = np.linspace(0, 1, 1970)
    wrong = np.zeros(u.size, bool)
    wrong[[214, 300]] = True  # the 215th surest decision is the first wrong one; 230 are needed at 1 %
    cal = risk_threshold(u, wrong, 0.01, 0.1)
    summary = _routing_summary({"failure_oof_auroc": 0.8, "routing": {
        "policy": "risk", "alpha": 0.01, "delta": 0.1, "calibration": cal.as_dict()},
        "coverage_by_alpha": {"0.01": 0.0, "0.05": 0.6, "0.1": 0.9}})
    assert summary.startswith("routing: risk ≤ 1.0% with confidence 90% cannot be vouched for from 1970 labelled "
                              "frames (it needs the surest 230 out-of-fold decisions all right; the first wrong one "
                              "comes after 214): every frame goes to review")
    assert "; other risks (--alpha) would auto-decide: ≤ 5% → 60%, ≤ 10% → 90%; failure AUROC 0.8" in summary


def test_train_checks_the_routing_options_it_is_given_before_anything_else(tmp_path: Path) -> None:
    """Told nothing, train routes as the current version does; told something impossible, it says so first."""
    config = str(tmp_path / "config.yaml")
    _assert_one_line_error(run_lineside("train", "--config", config, "--policy", "bogus"),
                           "--policy must be risk or budget, not 'bogus'")
    _assert_one_line_error(run_lineside("train", "--config", config, "--alpha", "2"),
                           "alpha and delta must be in (0, 1)")
    _assert_one_line_error(run_lineside("train", "--config", config, "--budget", "0.3"), "cannot read config")


def test_calibration_with_only_unreadable_images_fails_clearly(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for i in range(4):
        (good / f"{i}.png").write_bytes(b"garbage")
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    _assert_one_line_error(run_lineside("calibrate", "--config", str(config), "--good", str(good)),
                           "could be read")


def test_calibrating_a_line_again_keeps_its_routing_defect_rate_and_search_unless_told(
        tmp_path: Path, textile_images: dict[str, Path]) -> None:
    """A new pack or new good images mean a new calibration; how the line routes, how often it makes defects and
    the cheaper search its CPU needed are the line's, not the images': they stay, each option replaces only
    itself, --defect-rate 0 forgets the rate and --no-coarse-to-fine the search."""
    import json

    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    good = ["--config", str(config), "--good", str(textile_images["good"]), "--limit", "6"]

    def settings() -> tuple[dict[str, object], object, object]:
        version = (tmp_path / "profile" / "CURRENT").read_text().strip()
        data = json.loads((tmp_path / "profile" / version / "profile.json").read_text())
        return data["metrics"]["routing_policy"], data["defect_rate"], data["metrics"].get("coarse_to_fine")

    first = run_lineside("calibrate", *good, "--policy", "budget", "--budget", "0.3", "--defect-rate", "0.05",
                         "--coarse-to-fine")
    assert first.returncode == 0, first.stderr
    assert "from v0001" not in first.stdout  # a new line: nothing to keep
    searched = settings()[2]
    assert searched is not None
    again = run_lineside("calibrate", *good)
    assert again.returncode == 0, again.stderr
    assert ("routing by budget 30% (at most that share of frames to review), the line's defect rate 0.05, the "
            "few-shot search coarse to fine: from v0001") in again.stdout
    assert settings() == ({"policy": "budget", "alpha": 0.01, "delta": 0.1, "budget": 0.3}, 0.05, searched)
    told = run_lineside("calibrate", *good, "--budget", "0.1", "--defect-rate", "0", "--no-coarse-to-fine")
    assert told.returncode == 0, told.stderr
    assert "budget 10%" in told.stdout
    assert "the few-shot search at every patch in all dimensions: from v0002" in told.stdout
    assert settings() == ({"policy": "budget", "alpha": 0.01, "delta": 0.1, "budget": 0.1}, None, None)
    last = run_lineside("calibrate", *good)
    assert last.returncode == 0, last.stderr
    assert "the few-shot search at every patch in all dimensions: from v0003" in last.stdout


def test_defect_rate_out_of_range_is_refused(tmp_path: Path, textile_images: dict[str, Path]) -> None:
    config = line_config(tmp_path, tmp_path, free_port(), free_port())
    _assert_one_line_error(run_lineside("calibrate", "--config", str(config), "--good", str(textile_images["good"]),
                                        "--defect-rate", "3"), "defect rate", "between 0 and 1")


def test_unreadable_frame_in_the_stream_is_counted_not_fatal(tmp_path: Path, calibrated_profile: Path,
                                                             textile_images: dict[str, Path]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(textile_images["test_nominal"].iterdir())[:3]:
        shutil.copy(p, frames / p.name)
    (frames / "zz_broken.jpg").write_bytes(b"not an image at all")
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    config = line_config(tmp_path, frames, free_port(), free_port())
    result = run_lineside("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert any("zz_broken.jpg" in line for line in result.stderr.splitlines())
    import json
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["frames"] == 3 and status["capture"]["undecodable"] == 1 and status["capture"]["corrupt"] == 0


def test_runtime_never_imports_torch() -> None:
    code = ("import sys, edge.daemon, edge.cli, edge.station.server, edge.demo; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def _help_of(*command: str) -> str:
    from typer.testing import CliRunner

    from edge.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_help_text_is_plain_and_speaks_to_the_user() -> None:
    """No internal ticket numbers, no '<bool>' type column: flags read --name / --no-name."""
    import re

    import typer

    from edge.cli import app

    root = typer.main.get_command(app)
    commands: list[list[str]] = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        commands.append([name])
        commands += [[name, sub] for sub in getattr(command, "commands", {})]
    assert len(commands) > 15
    for command in [[], *commands]:
        text = _help_of(*command)
        assert not re.search(r"\bissue\b|ticket", text, re.I), (command, text)
        assert "<bool>" not in text, (command, text)
    assert "--verbose / --no-verbose" in _help_of("demo")


def test_faults_help_lists_its_options_with_the_harness_scenarios() -> None:
    from edge.tools.faults.processes import SCENARIOS

    text = _help_of("faults")
    for option in ("--frames", "--out", "--scenarios", "--rate", "--outage-s", "--kills", "--fsync", "--timeout-s",
                   "--database-url"):
        assert option in text, option
    assert all(name in text.replace("\n", "").replace(" ", "") for name in SCENARIOS)
    result = run_lineside("faults", "--scenarios", "station_kill,meteor", timeout=60)
    assert result.returncode == 2 and "unknown scenario(s) meteor" in result.stderr
