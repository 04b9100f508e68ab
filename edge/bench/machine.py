"""What a benchmark ran on: cores, CPU model and int8 target (VNNI or not), ONNX Runtime provider; and the process's
resident memory."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edge.vlm.cpu import cpu_model, cpu_target, usable_cores


def machine(provider: str = "") -> dict[str, Any]:
    """The machine line that goes with every number: cores, CPU model and int8 target, provider, load when the run
    began."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cores": usable_cores(), "cpu": cpu_model(), "cpu_target": cpu_target(), "provider": provider,
            "os": platform.system(), "python": platform.python_version(), "load_1min": round(load[0], 2)}


def rss_mb() -> float:
    """Peak resident set size of this process in MB (VmHWM), the figure the 400 MB goal is about."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
