"""The report's goal column and the several-seed summary read the figures a line engineer compares."""

from edge.eval.report import gap_to_goal, report_markdown, seeds_markdown
from edge.eval.run import eval_command

BY_LABEL = {"0": 0.97, "0.33": 0.96, "0.67": 0.35, "1": 0.70}
REPORT = {"elpv": {"accuracy": 0.88, "accuracy_by_label": BY_LABEL, "ablation_auroc": {"fused": 0.9},
                   "loop": {"escaped_per_1000": 0.5}},
          "elpv_unseen": {"accuracy": 0.83, "accuracy_by_label": BY_LABEL, "ablation_auroc": {"fused": 0.85}},
          "config": {"seed": 0, "quick": False, "datasets": ["elpv"], "pack_version": "p"}, "seconds": 1.0}


def test_gap_to_goal_reads_at_least_and_at_most_goals():
    assert gap_to_goal("elpv.accuracy", 0.88) == "-0.030"
    assert gap_to_goal("elpv_unseen.accuracy", 0.90) == "met"
    assert gap_to_goal("elpv.loop.escaped_per_1000", 0.5) == "met"
    assert gap_to_goal("elpv.loop.escaped_per_1000", 3.0) == "+2.000"
    assert gap_to_goal("captions.class_accuracy", 0.5) == ""


def test_figures_under_keys_with_dots_are_reported():
    md = report_markdown(REPORT)
    assert "| `elpv.accuracy_by_label.0.67` | 0.3500 |" in md
    assert "| `elpv.loop.escaped_per_1000` | 0.5000 |" in md


def test_seed_summary_gives_each_seed_and_the_mean_with_its_spread():
    other = {**REPORT, "elpv": {**REPORT["elpv"], "accuracy": 0.90}}
    md = seeds_markdown({0: REPORT, 1: other})
    row = next(line for line in md.splitlines() if line.startswith("| `elpv.accuracy` |"))
    assert "0.8800 | 0.9000 | 0.8900 ± 0.0141 | -0.020" in row


def test_the_report_says_how_to_make_it_again_and_where_it_ran():
    command = eval_command(["elpv"], 0, False, True, 200, None)
    assert command == "lineside eval --dataset elpv --loop --out DIR"
    assert eval_command(["textile", "elpv", "synthetic-loc"], 2, True, False, 200, {8: 1024, 16: 512}) == \
        "lineside eval --dataset all --seed 2 --quick --bank-size 1024 --out DIR"
    config = {**REPORT["config"], "command": command, "started": "2026-12-03 22:53 UTC",
              "machine": {"cpu": "Intel(R) Xeon(R) Processor", "cpu_target": "x86-vnni", "cores": 2}}
    md = report_markdown({**REPORT, "config": config})
    assert ("1.0 s from 2026-12-03 22:53 UTC on 2 cores of Intel(R) Xeon(R) Processor (x86-vnni). "
            "Reproduce: `lineside eval --dataset elpv --loop --out DIR`.") in md


def test_the_loop_with_a_fallible_operator_reads_round_by_round_with_and_without_recheck():
    assert eval_command(["elpv"], 0, False, True, 200, None, operator_error=0.05) == \
        "lineside eval --dataset elpv --loop --operator-error 0.05 --out DIR"

    def arm(wrong: list[int], asked: list[int], accuracy: list[float]) -> dict:
        return {"rounds": [{"round": i, "reviews": 200 * i, "wrong_answers": w, "asked_again": a, "accuracy": acc}
                           for i, (w, a, acc) in enumerate(zip(wrong, asked, accuracy, strict=True))]}

    rounds = [{"round": 0, "reviews": 0, "rows": 100, "workload": float("nan"), "escaped_per_1000": float("nan"),
               "accuracy": 0.83, "failure_auroc": 0.7, "coverage_at_1pct": 0.1, "coverage_at_5pct": 0.4}]
    loop = {"stream": 1870, "every": 200, "alpha_routing": 0.05, "rounds": rounds, "escaped_per_1000": 0.5,
            "noisy": {"operator_error": 0.05, "answers": arm([0, 11], [0, 0], [0.83, 0.84]),
                      "recheck": arm([0, 11], [0, 10], [0.83, 0.85])}}
    md = report_markdown({**REPORT, "elpv": {**REPORT["elpv"], "loop": loop}})
    assert "an operator who answers 5% of frames wrong" in md
    assert "| 1 | 200 | 11 | 0.840 | 10 | 11 | 0.850 |" in md
    loop["noisy"]["recheck"] = arm([0, 11, 12], [0, 10, 10], [0.83, 0.85, 0.86])  # one retraining more
    md = report_markdown({**REPORT, "elpv": {**REPORT["elpv"], "loop": loop}})
    assert "| 1 | 200 | 11 | 0.840 | 10 | 11 | 0.850 |" in md and "| 2 | — | — | — | 10 | 12 | 0.860 |" in md
