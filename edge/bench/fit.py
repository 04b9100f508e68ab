"""Fitting times on the line's own CPU: `lineside calibrate` from 50 good and 50 labelled defect images, then
`lineside train` on 2,000 reviewed frames (the goals: ≤ 2 min and ≤ 10 min on 2 cores), on textile frames; then the
next `lineside train`, once 100 more frames are reviewed (it reads those, and the good frames the line model learns
from, not the whole history again).

Calibrate gets the textile train split's good images and the calib split's defects (local and global). The reviewed
frames are the station's training export (edge.transport.reviewed.ReviewedFrame) as an operator leaves it who
accepted the good parts and relabelled the defective ones (local → spot, global → texture), over the calib and test
splits' images; asked for more than they hold, the images come round again, each read, encoded and searched anew.
Each fit runs in a process of its own, as `lineside calibrate` and `lineside train` do.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from edge.bench.inference import Say, _quiet
from edge.datasets import textile_split
from edge.images import ImageHeader, read_file, read_header
from edge.transport.reviewed import ReviewedFrame

OPERATOR_SAYS = {"nominal": "good", "local": "spot", "global": "texture"}


def reviewed_textile(count: int) -> list[ReviewedFrame]:
    """`count` reviewed frames over the textile calib and test images, each answered as its label says."""
    labelled = textile_split("calib") + textile_split("test")
    headers: dict[Path, ImageHeader] = {}
    frames = []
    for i, (path, label) in enumerate(islice(cycle(labelled), count)):
        answer = OPERATOR_SAYS[label]
        if path not in headers:
            headers[path] = read_header(read_file(path), str(path))
        width, height = headers[path].width, headers[path].height
        frames.append(ReviewedFrame(
            item_id=i + 1, frame_id=f"bench:cam0:{i}", line_id="bench", source_id="cam0",
            image_path=path.resolve(), width=width, height=height, captured_wall=1000.0 + i, verdict="good",
            class_scores={"good": 0.6, "spot": 0.2, "texture": 0.2}, uncertainty=0.5, anomaly_score=0.0,
            reason="uncertain", pack_version="bench", profile_version="bench@v0001", final_verdict=answer,
            defect_class=None if answer == "good" else answer, decision="accept" if answer == "good" else "relabel",
            reviewer="bench", reviewed_wall=2000.0 + i))
    return frames


def _calibrate(pack_dir: Path, good: list[Path], defects: list[Path], profile_dir: Path, provider: str,
               seconds: Any) -> None:
    from edge.fit.calibrate import calibrate
    from edge.vlm.pack import load_pack
    from edge.vlm.vocabulary import load_vocabulary

    started = time.monotonic()
    calibrate(load_pack(pack_dir), load_vocabulary(), good, "bench", profile_dir, defects=defects,
              provider=provider)
    seconds.value = time.monotonic() - started


def _train(pack_dir: Path, profile_dir: Path, reviewed: int, provider: str, seconds: Any, rows: Any,
           read: Any = None) -> None:
    from edge.fit.train import train_profile
    from edge.vlm.pack import load_pack

    started = time.monotonic()
    profile = train_profile(load_pack(pack_dir), profile_dir, reviewed_textile(reviewed), provider=provider)
    seconds.value = time.monotonic() - started
    rows.value = int(profile.metrics["rows"])
    if read is not None:
        read.value = int(profile.metrics["reviewed_frames"])


def bench_fit(pack_dir: Path, provider: str = "cpu", good_images: int = 50, defect_images: int = 50,
              reviewed: int = 2000, new_reviews: int = 100, say: Say = _quiet) -> dict[str, Any]:
    """Seconds for calibrate from `good_images` good + `defect_images` labelled defects, for train on `reviewed`
    reviewed frames on top of that version, and for the next train on top of that one, when `new_reviews` more
    frames have been reviewed (`retrain_read`: the frames it read, the rest being in the rows already)."""
    good = [p for p, label in textile_split("train") if label == "nominal"][:good_images]
    defects = [p for p, label in textile_split("calib") if label != "nominal"][:defect_images]
    spawn = multiprocessing.get_context("spawn")
    calibrate_s, train_s, rows = spawn.Value("d", 0.0), spawn.Value("d", 0.0), spawn.Value("i", 0)
    retrain_s, retrain_rows, retrain_read = spawn.Value("d", 0.0), spawn.Value("i", 0), spawn.Value("i", 0)
    with tempfile.TemporaryDirectory(prefix="lineside-bench-fit-") as tmp:
        profile_dir = Path(tmp) / "profile"
        say(f"calibrating from {len(good)} good + {len(defects)} defect images …")
        _run(spawn.Process(target=_calibrate, name="bench-calibrate",
                           args=(pack_dir, good, defects, profile_dir, provider, calibrate_s)))
        say(f"training on {reviewed} reviewed frames …")
        _run(spawn.Process(target=_train, name="bench-train",
                           args=(pack_dir, profile_dir, reviewed, provider, train_s, rows)))
        say(f"training again after {new_reviews} more reviews …")
        _run(spawn.Process(target=_train, name="bench-retrain", args=(
            pack_dir, profile_dir, reviewed + new_reviews, provider, retrain_s, retrain_rows, retrain_read)))
    return {"calibrate_s": round(calibrate_s.value, 1), "calibrate_images": len(good) + len(defects),
            "train_s": round(train_s.value, 1), "train_reviewed": reviewed, "train_rows": rows.value,
            "retrain_s": round(retrain_s.value, 1), "retrain_new": new_reviews, "retrain_read": retrain_read.value,
            "retrain_rows": retrain_rows.value}


def _run(process: Any) -> None:
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{process.name} failed (exit code {process.exitcode})")
