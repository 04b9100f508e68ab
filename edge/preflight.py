"""`python -m edge.preflight`: the Python half of the Jetson container's entry point (deploy/jetson/).

Checks, before the daemon starts, what makes a first start on a fresh box fail late: the config loads, the model
pack's files match their sha256, ONNX Runtime offers the providers the config asks for, the TensorRT engine cache
folder is writable, the camera device exists. With ``--warm-up`` it then builds the inspector and runs one frame,
which under TensorRT builds and caches the engines (minutes on a Jetson; later starts load them from the cache).
Prints one JSON object; exit status 0 when every check passed, 1 otherwise. Runs anywhere the project runs (no
GPU needed: on a CPU-only machine the provider check says so and the warm-up uses the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def preflight(config: Path, warm_up: bool = False) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from edge.config import ConfigError, load_config
    from edge.vlm.pack import PackError, load_pack

    checks: dict[str, Any] = {}
    try:
        cfg = load_config(config).line
    except ConfigError as exc:
        return {"ok": False, "config": str(exc)}
    checks["config"] = "ok"
    try:
        pack = load_pack(cfg.model.pack)
        checks["pack"] = f"ok ({pack.version})"
    except PackError as exc:
        checks["pack"] = str(exc)
    available = ort.get_available_providers()
    wanted = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
              "cpu": "CPUExecutionProvider"}.get(cfg.model.provider)
    checks["providers"] = available
    checks["provider"] = ("ok" if wanted is None or wanted in available
                          else f"config asks for {cfg.model.provider} but ONNX Runtime offers {available}")
    # the engine cache the TensorRT provider will write: the config's, where TensorRT is what runs; the container's
    # ORT_TENSORRT_CACHE_PATH (the mounted volume) otherwise
    trt = cfg.model.tensorrt
    runs_trt = cfg.model.provider == "tensorrt" or (cfg.model.provider == "auto"
                                                    and "TensorrtExecutionProvider" in available)
    cache = str(trt.engine_cache_dir) if trt.engine_cache and runs_trt else os.environ.get("ORT_TENSORRT_CACHE_PATH")
    if cache:
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
            probe = Path(cache) / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            checks["engine_cache"] = f"ok ({cache})"
        except OSError as exc:
            checks["engine_cache"] = f"{cache} is not writable: {exc.strerror}"
    if cfg.source.kind == "camera" and isinstance(cfg.source.device, str):
        checks["camera"] = "ok" if Path(cfg.source.device).exists() else f"{cfg.source.device} does not exist"
    ok = all(v == "ok" or (isinstance(v, str) and v.startswith("ok (")) for k, v in checks.items()
             if k != "providers")
    if warm_up and ok:
        from edge.inspect.inspector import load_inspector

        started = time.monotonic()
        try:
            inspector = load_inspector(cfg)
            inspector.inspect(np.full((256, 256, 3), 128, np.uint8))  # resized by the encoder like any frame
            checks["warm_up"] = f"ok ({time.monotonic() - started:.1f} s)"
        except Exception as exc:
            checks["warm_up"] = f"{type(exc).__name__}: {exc}"
            ok = False
    return {"ok": ok, **checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--warm-up", action="store_true", help="load the models and run one frame (builds engines)")
    args = parser.parse_args(argv)
    result = preflight(args.config, args.warm_up)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
