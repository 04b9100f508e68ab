"""This machine's CPU: as ONNX Runtime's int8 guidance names it (what `lineside pack quantize --target auto` picks,
and what `lineside pack check` compares a quantised pack's target with), its model name and usable cores (what every
speed figure is quoted with)."""

from __future__ import annotations

import os
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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
