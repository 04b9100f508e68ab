"""This machine's CPU as ONNX Runtime's int8 guidance names it (what `lineside pack quantize --target auto` picks,
and what `lineside pack check` compares a quantised pack's target with)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal


def cpu_target() -> Literal["x86-vnni", "x86", "arm"]:
    """This machine's CPU in ONNX Runtime's int8 guidance terms (Linux /proc/cpuinfo; x86 without VNNI elsewhere)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "x86"
    return "x86-vnni" if ("avx512_vnni" in flags or "avx_vnni" in flags) else "x86"
