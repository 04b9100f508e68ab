"""`lineside bench int8` and `lineside bench batch`: the INT8 image encoder against FP32, and the batch-size curve.

Both quantise the bench pack first, exactly as `lineside pack quantize` does (static QDQ, calibrated on
`good_images` textile *train* good images), into a temp directory kept for the rest of the process (one
quantisation serves both parts). Timings are bare `session.run` calls on preprocessed textile test frames.

- int8: FP32 and INT8 sessions timed alternately in rounds (a shared machine's speed drifts; the ratio within one
  run holds), and the INT8-vs-FP32 cosine of the global and patch embeddings on textile *test* frames (never used
  for calibration). The issue's goal: INT8 ≥ 1.6× FP32 frames/s with the accuracy change ≤ 1 point; the AUROC
  change is `lineside pack quantize … --eval` (minutes, so not in the bench).
- batch: frames/s of both sessions at batch sizes 1, 2, 4, 8 (a pack whose image input is fixed at batch 1 gets
  batch 1 only, and says so).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.inference import Say, _quiet, bare_encoder_loop, decode, test_frames
from edge.datasets import textile_split
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder

BATCH_SIZES = (1, 2, 4, 8)
_QUANTISED: dict[tuple[str, int], tuple[tempfile.TemporaryDirectory[str], Path, dict[str, Any]]] = {}


def quantised_pack(pack_dir: Path, good_images: int, say: Say = _quiet) -> tuple[Path, dict[str, Any]]:
    """The bench pack quantised on `good_images` textile train good images (once per process)."""
    from edge.vlm.quantize import quantize_pack

    key = (str(Path(pack_dir).resolve()), good_images)
    if key not in _QUANTISED:
        tmp = tempfile.TemporaryDirectory(prefix="lineside-bench-int8-")
        good = [p for p, label in textile_split("train") if label == "nominal"][:good_images]
        say(f"int8: quantising {pack_dir} on {len(good)} textile train good images …")
        started = time.monotonic()
        result = quantize_pack(Path(pack_dir), good, Path(tmp.name) / "int8")
        info = {"int8_quantize_s": round(time.monotonic() - started, 1),
                "int8_calibration_images": result.calibration_images, "int8_pack": result.pack.version}
        _QUANTISED[key] = (tmp, result.pack.directory, info)
    _, directory, info = _QUANTISED[key]
    return directory, info


def _missing_onnx(part: str, say: Say) -> dict[str, Any] | None:
    """The quantiser needs the `onnx` package (build extra); a runtime-only install skips these parts, saying so,
    rather than failing `lineside bench all`."""
    import importlib.util

    if importlib.util.find_spec("onnx") is not None:
        return None
    say(f"{part}: skipped: the quantiser needs the onnx package (pip install onnx, or the build extra)")
    return {f"{part}_skipped": "onnx not installed"}


def bench_int8(pack_dir: Path, provider: str = "cpu", seconds: float = 10.0, good_images: int = 30,
               frames: int = 60, rounds: int = 3, say: Say = _quiet) -> dict[str, Any]:
    from edge.vlm.quantize import compare_encoders

    if (skipped := _missing_onnx("int8", say)) is not None:
        return skipped
    int8_dir, info = quantised_pack(pack_dir, good_images, say)
    fp32 = ImageEncoder(load_pack(pack_dir), provider, quiet=True)
    int8 = ImageEncoder(load_pack(int8_dir), provider, quiet=True)
    batch = fp32.preprocess(decode(test_frames(1)[0]))[None]
    counts = {"fp32": [0, 0.0], "int8": [0, 0.0]}
    per = seconds / (2 * rounds)
    for r in range(rounds):
        say(f"int8: round {r + 1}/{rounds}: fp32 {per:.1f} s, int8 {per:.1f} s")
        for name, encoder in (("fp32", fp32), ("int8", int8)):
            n, s = bare_encoder_loop(encoder, batch, per)
            counts[name][0] += n
            counts[name][1] += s
    fps = {name: n / s for name, (n, s) in counts.items()}
    files = [p for p, _ in textile_split("test")]
    pick = np.random.default_rng(0).permutation(len(files))[:frames]
    say(f"int8: cosine to fp32 on {len(pick)} textile test frames …")
    accuracy = compare_encoders(fp32, int8, [files[i] for i in sorted(pick)])
    return {"fp32_encoder_fps": round(fps["fp32"], 2), "int8_encoder_fps": round(fps["int8"], 2),
            "int8_over_fp32": round(fps["int8"] / fps["fp32"], 3),
            **{f"int8_{k}": v for k, v in accuracy.items()}, "int8_cosine_frames": len(pick), **info}


def bench_batch(pack_dir: Path, provider: str = "cpu", seconds: float = 10.0, good_images: int = 30,
                rounds: int = 2, say: Say = _quiet) -> dict[str, Any]:
    if (skipped := _missing_onnx("batch", say)) is not None:
        return skipped
    int8_dir, info = quantised_pack(pack_dir, good_images, say)
    encoders = {"fp32": ImageEncoder(load_pack(pack_dir), provider, quiet=True),
                "int8": ImageEncoder(load_pack(int8_dir), provider, quiet=True)}
    dim = encoders["fp32"].session.get_inputs()[0].shape[0]
    sizes = BATCH_SIZES if not isinstance(dim, int) else (dim,)
    images = [decode(b) for b in test_frames(max(sizes))]
    stacked = np.stack([encoders["fp32"].preprocess(im) for im in images])
    per = seconds / (rounds * len(sizes) * len(encoders))
    result: dict[str, Any] = {"batch_sizes": list(sizes), "batch_axis": "dynamic" if len(sizes) > 1
                              else f"fixed at {dim} in the ONNX input"}
    totals: dict[str, list[float]] = {}
    for r in range(rounds):  # every configuration in every round: drift of a shared machine hits them alike
        say(f"batch: round {r + 1}/{rounds}: batch sizes {list(sizes)}, fp32 and int8, {per:.1f} s each")
        for b in sizes:
            for name, encoder in encoders.items():
                n, s = bare_encoder_loop(encoder, np.ascontiguousarray(stacked[:b]), per)
                total = totals.setdefault(f"batch{b}_{name}_fps", [0, 0.0])
                total[0] += n
                total[1] += s
    result.update({key: round(n / s, 2) for key, (n, s) in totals.items()})
    return {**result, "int8_pack": info["int8_pack"]}
