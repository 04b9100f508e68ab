"""Top functions of a py-spy raw profile, within one function's samples (what BENCHMARKS.md quotes):

    py-spy record -r 50 -f raw -o var/pipeline.raw -- .venv/bin/python -m edge.cli bench pipeline --seconds 10
    .venv/bin/python -m edge.bench.pyspy_top var/pipeline.raw --within Inspector.inspect

py-spy is a dev tool (`pip install py-spy`), not a runtime dependency.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def top(raw: Path, within: str, n: int = 8) -> tuple[int, list[tuple[str, int]]]:
    """(samples inside `within`, [(leaf function, samples)] most frequent first)."""
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not any(f.startswith(within) for f in frames):
            continue
        total += int(count)
        leaf[frames[-1].split(" (")[0] + " (" + frames[-1].split(" (")[-1]] += int(count)
    return total, leaf.most_common(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--within", default="Inspector.inspect")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    total, rows = top(args.raw, args.within, args.top)
    print(f"{total} samples inside {args.within}")
    for name, count in rows:
        print(f"{100 * count / max(total, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
