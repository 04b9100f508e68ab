"""`python -m edge.bench.lookalike`: frames of one kind lie closer together than frames of different kinds."""

from __future__ import annotations

import re

from edge.bench.lookalike import main


def test_global_defects_lie_closer_to_each_other_than_to_good_frames(capsys) -> None:
    main(["--frames", "40"])
    out = capsys.readouterr().out
    medians = {m[1]: float(m[2]) for m in re.finditer(r"(\w+ +– \w+) +[\d.]+ / ([\d.]+) /", out)}
    medians = {re.sub(" +", " ", k): v for k, v in medians.items()}
    assert medians["global – global"] < 0.15 < medians["nominal – global"]
    assert "brighter by 20" in out
