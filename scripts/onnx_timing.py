"""Image-tower ONNX files side by side, in the daemon's own CPU sessions (`edge.vlm.runtime.make_session`):

    .venv/bin/python scripts/onnx_timing.py time A.onnx B.onnx …   # ms per run, alternating in rounds; ratio to A
    .venv/bin/python scripts/onnx_timing.py ops A.onnx              # ONNX Runtime's profile: ms per run by op type

For comparing quantisation variants (`lineside pack quantize … --float-layers N` into different directories) and
graph changes; `lineside bench int8` times only the default quantisation against FP32. One batch-1 input of the
model's own size; on a shared machine only the ratios within one run mean much.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.vlm.runtime import make_session


def _input(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    spec = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    return {spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def time_models(paths: list[Path], rounds: int = 8, seconds: float = 1.0) -> list[float]:
    """ms per run of each model, every model `seconds` per round, the models alternating."""
    sessions = [make_session(str(p), "cpu", quiet=True) for p in paths]
    feeds = [_input(s) for s in sessions]
    runs, spent = [0] * len(paths), [0.0] * len(paths)
    for _ in range(rounds):
        for i, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                session.run(None, feed)
                runs[i] += 1
            spent[i] += time.perf_counter() - started
    return [1000 * s / n for s, n in zip(spent, runs, strict=True)]


def op_profile(path: Path, runs: int = 20) -> dict[str, float]:
    """ms per run by op type (kernel time), from ONNX Runtime's own profiler; the first 5 runs are warm-up."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = _input(session)
        for _ in range(5 + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: Counter[str] = Counter()
    per_node: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"]] += 1
            by_op[event["args"]["op_name"]] += event["dur"]
    measured = max(per_node.values(), default=1)  # runs profiled (warm-up included)
    return {op: round(us / measured / 1000, 3) for op, us in by_op.most_common()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("time")
    t.add_argument("models", type=Path, nargs="+")
    t.add_argument("--rounds", type=int, default=8)
    o = sub.add_parser("ops")
    o.add_argument("model", type=Path)
    args = ap.parse_args()
    if args.what == "time":
        ms = time_models(args.models, args.rounds)
        for path, m in zip(args.models, ms, strict=True):
            print(f"{m:7.2f} ms  {ms[0] / m:5.2f}x  {path}")
    else:
        for op, m in op_profile(args.model).items():
            print(f"{m:7.3f} ms  {op}")


if __name__ == "__main__":
    main()
