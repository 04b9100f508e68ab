"""Compare the numeric figures of two `lineside eval` report.json files: every leaf number that differs by more than
a tolerance, and the largest difference. Exit 0 when all are within it.

    python scripts/compare_reports.py BEFORE/report.json AFTER/report.json [--tol 0.001]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SKIP = {"seconds", "config"}  # run times and the run's own description are not figures


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in SKIP:
                yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, float(node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=0.001)
    args = parser.parse_args(argv)
    before = dict(leaves(json.loads(args.before.read_text())))
    after = dict(leaves(json.loads(args.after.read_text())))
    worst, off = 0.0, []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            off.append(f"{key}: only in {'after' if a is None else 'before'}")
            continue
        if math.isnan(a) and math.isnan(b):
            continue
        diff = abs(a - b)
        worst = max(worst, diff)
        if not diff <= args.tol:
            off.append(f"{key}: {a:g} -> {b:g} ({b - a:+.4g})")
    print("\n".join(off) if off else f"all {len(before)} figures within {args.tol:g} (largest difference {worst:.2g})")
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
