"""Outbox put rate under each fsync policy: ``python -m edge.bench.outbox [DIR] [--items N]``.

Writes N items of a ~50 KB payload into a fresh outbox under DIR (default: a temp folder; pass a folder on the disk
you care about, e.g. the edge's SD card) and prints items/s and ms per put for fsync "always" and "batch".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from edge.transport.outbox import FsyncPolicy, Outbox
from edge.transport.schema import ReviewItem


def _item(seq: int) -> ReviewItem:
    return ReviewItem(frame_id=f"bench:cam0:1:{seq}", line_id="bench", source_id="cam0", seq=seq, captured_wall=0.0,
                      decided_wall=0.0, width=640, height=480, verdict="good", class_scores={"good": 1.0},
                      anomaly_score=0.0, anomaly_threshold=1.0, uncertainty=0.5, pack_version="p",
                      profile_version="v")


def measure(directory: Path, policy: FsyncPolicy, items: int, payload: bytes) -> float:
    """Seconds to put `items` items (and flush, for batch) into a fresh outbox in `directory`."""
    box = Outbox(directory, fsync=policy)
    started = time.perf_counter()
    for i in range(items):
        box.put(_item(i), payload)
    box.flush()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=None)
    parser.add_argument("--items", type=int, default=500)
    args = parser.parse_args()
    payload = b"\xff\xd8" + os.urandom(50_000) + b"\xff\xd9"
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for policy in ("always", "batch"):
            seconds = measure(Path(tmp) / policy, policy, args.items, payload)
            print(f"fsync {policy:6s}: {args.items / seconds:8.0f} items/s  {1000 * seconds / args.items:6.2f} ms/put "
                  f"({args.items} items of {len(payload) // 1000} KB in {tmp})")


if __name__ == "__main__":
    main()
