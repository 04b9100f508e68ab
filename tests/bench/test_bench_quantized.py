"""`lineside bench int8` / `batch` (edge/bench/bench_quantized.py) at tiny sizes: every key, one quantisation shared
by both parts, a sane cosine. No timing thresholds: the measured ratio is in the bench output, not a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bench import bench_quantized as bq
from edge.bench.run import BenchOptions, run_parts

pytest.importorskip("onnx")
PACK = Path(__file__).resolve().parents[2] / "models" / "starter"


def test_int8_and_batch_parts_report_every_key() -> None:
    opts = BenchOptions(pack=PACK, seconds=0.8, good_images=4, frames=3)
    result = run_parts(["int8", "batch"], opts, lambda _msg: None)
    for key in ("fp32_encoder_fps", "int8_encoder_fps", "int8_over_fp32", "int8_quantize_s"):
        assert result[key] > 0, key
    assert result["int8_calibration_images"] == 4  # fewer than 5 good images: all calibrate (split_holdout)
    assert result["int8_global_cosine_mean"] > 0.9 and result["int8_cosine_frames"] == 3
    assert result["batch_sizes"] == [1, 2, 4, 8] and result["batch_axis"] == "dynamic"
    for b in (1, 2, 4, 8):
        assert result[f"batch{b}_fp32_fps"] > 0 and result[f"batch{b}_int8_fps"] > 0
    assert len(bq._QUANTISED) == 1  # noqa: SLF001 - the batch part reused the int8 part's quantised pack
    assert "-int8-" in result["int8_pack"]
