"""scripts/onnx_timing.py on the starter pack's image tower: a time per model and a profile by op type."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
_spec = importlib.util.spec_from_file_location("onnx_timing", REPO / "scripts" / "onnx_timing.py")
assert _spec is not None and _spec.loader is not None
onnx_timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(onnx_timing)

IMAGE = REPO / "models" / "starter" / "image.onnx"


def test_times_each_model_given() -> None:
    ms = onnx_timing.time_models([IMAGE, IMAGE], rounds=1, seconds=0.2)
    assert len(ms) == 2 and all(0 < m < 1000 for m in ms)


def test_profile_by_op_type_is_mostly_convolution() -> None:
    ops = onnx_timing.op_profile(IMAGE, runs=3)
    assert next(iter(ops)) == "Conv"  # most time first: an EfficientNet is its convolutions
    assert all(ms >= 0 for ms in ops.values())
