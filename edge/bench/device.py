"""One prepared run on a GPU machine: the pack's image tower and the profile's frame graph on the device's provider
(TensorRT FP16 engines built and cached, or CUDA), each decision against the CPU path's on the same frames, and
frames/s of the bare tower and of the whole inspection with their ratio.

    python -m edge.bench.device --provider tensorrt --profile PROFILE_DIR --frames FRAMES_DIR --json

`--profile` is a line profile made where torch is (`lineside calibrate`; without it, a bench profile is calibrated
here from textile train good images, as `lineside bench` does); `--frames` a folder of frames (without it, textile
test frames). The engines go to `--engine-cache` (built once, a later run loads them; the first session's start
time is reported). On a machine without a GPU `--provider cpu` runs the same code against itself (the tests do).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import TensorrtConfig
from edge.images import ImageError, list_images, read_image
from edge.inspect.inspector import Inspection, Inspector
from edge.profile.versions import load_profile
from edge.vlm.pack import ModelPack, load_pack

STARTER = Path(__file__).resolve().parents[2] / "models" / "starter"
SCORE_ATOL = 0.05  # logit units: FP16 engines move the scores a little; a verdict may flip only this close to its cut


def _frames_from(folder: Path | None, n: int) -> list[np.ndarray]:
    if folder is not None:
        try:
            files = list_images(folder)[:n]
        except ImageError as exc:
            raise SystemExit(f"no frames: {exc}") from None
        return [read_image(p) for p in files]
    from edge.bench.inference import decode, test_frames

    return [decode(b) for b in test_frames(n)]


@contextmanager
def _profile_dir(given: Path | None, pack_dir: Path) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    from edge.bench.inference import bench_line

    with bench_line(pack_dir, "cpu", 30, 1) as line:
        yield line.cfg.profile


def compare(reference: list[Inspection], device: list[Inspection]) -> dict[str, Any]:
    """How far the device's decisions are from the CPU path's on the same frames."""
    pairs = list(zip(reference, device, strict=True))
    near_cut = [abs(r.anomaly_score - r.anomaly_threshold) <= SCORE_ATOL for r in reference]
    flips = [r.verdict != d.verdict for r, d in pairs]
    return {
        "frames": len(pairs),
        "verdicts_equal": sum(not f for f in flips),
        "verdict_flips_away_from_cut": sum(f and not near for f, near in zip(flips, near_cut, strict=True)),
        "score_max_abs_diff": round(max(abs(r.anomaly_score - d.anomaly_score) for r, d in pairs), 5),
        "anomaly_map_max_abs_diff": round(max(float(np.abs(r.anomaly_map - d.anomaly_map).max()) for r, d in pairs),
                                          5),
        "p_wrong_max_abs_diff": round(max(abs(r.uncertainty.value - d.uncertainty.value) for r, d in pairs), 5),
        "region_counts_equal": sum(len(r.regions) == len(d.regions) for r, d in pairs),
    }


def _fps(run: Any, items: list[Any], seconds: float) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(items[n % len(items)])
        n += 1
    return n / (time.perf_counter() - started)


def bench_device(pack: ModelPack, profile_dir: Path, frames: list[np.ndarray], provider: str,
                 engine_cache: Path, seconds: float = 10.0, fp16: bool = True) -> dict[str, Any]:
    """Decisions against the CPU path, then tower and pipeline frames/s on `provider`, alternating in rounds."""
    profile = load_profile(profile_dir, pack_version=pack.version)
    cpu = Inspector(pack, profile, "cpu", search="float32")
    reference = [cpu.inspect(f) for f in frames]
    del cpu
    trt = TensorrtConfig(fp16=fp16, engine_cache=True, engine_cache_dir=engine_cache)
    started = time.perf_counter()
    inspector = Inspector(pack, profile, provider, tensorrt=trt, search="float32")
    inspector.inspect(frames[0])  # TensorRT builds (or loads) its engines at the first run
    first_s = time.perf_counter() - started
    device = [inspector.inspect(f) for f in frames]
    encoder = inspector.image_encoder
    batches = [encoder.preprocess(f)[None] for f in frames]
    rounds, enc_fps, pipe_fps = 3, [], []
    for _ in range(rounds):
        enc_fps.append(_fps(encoder.run, batches, seconds / (2 * rounds)))
        pipe_fps.append(_fps(inspector.inspect, frames, seconds / (2 * rounds)))
    encoder_fps, pipeline_fps = float(np.median(enc_fps)), float(np.median(pipe_fps))
    return {
        "provider_tower": encoder.session.get_providers()[0],
        "provider_graph": inspector.graph.session.get_providers()[0],
        "fp16": fp16, "first_inspection_s": round(first_s, 1),
        "encoder_fps": round(encoder_fps, 1), "pipeline_fps": round(pipeline_fps, 1),
        "pipeline_over_encoder": round(pipeline_fps / encoder_fps, 3),
        "against_cpu": compare(reference, device),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", default="tensorrt", choices=["tensorrt", "cuda", "cpu", "auto"])
    parser.add_argument("--pack", type=Path, default=STARTER)
    parser.add_argument("--profile", type=Path, default=None, help="line profile directory (CURRENT inside)")
    parser.add_argument("--frames", type=Path, default=None, help="folder of frames (default: textile test frames)")
    parser.add_argument("--n", type=int, default=60, help="frames compared and cycled through")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fp32", action="store_true", help="TensorRT without FP16 kernels")
    parser.add_argument("--engine-cache", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    pack = load_pack(args.pack)
    frames = _frames_from(args.frames, args.n)
    with _profile_dir(args.profile, args.pack) as profile_dir, tempfile.TemporaryDirectory() as tmp:
        result = bench_device(pack, profile_dir, frames, args.provider, args.engine_cache or Path(tmp),
                              args.seconds, fp16=not args.fp32)
    result["pack"] = pack.version
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}", file=sys.stdout)


if __name__ == "__main__":
    main()
