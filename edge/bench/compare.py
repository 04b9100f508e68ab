"""Before/after ratios of speed changes, each measured in one run (variants alternate in rounds):

    .venv/bin/python -m edge.bench.compare blas   [--seconds 24]   # few-/zero-shot products on 1 BLAS thread vs default
    .venv/bin/python -m edge.bench.compare ingest [--seconds 16]   # one commit per item vs group commit
    .venv/bin/python -m edge.bench.compare grids                   # patch grids to [h, w, D]: NumPy vs OpenCV
    .venv/bin/python -m edge.bench.compare preprocess              # a frame to the tower's input: NumPy vs OpenCV
    .venv/bin/python -m edge.bench.compare regions                 # regions of a large frame's map: cut at full
                                                                     # size vs at 15 pixels a map cell
    .venv/bin/python -m edge.bench.compare contrast                # a region's box: the map's vs drawn around
                                                                     # the frame's pixels (contrast cut), per size
    .venv/bin/python -m edge.bench.compare spin   [--seconds 96]   # ONNX Runtime pool: no spinning vs spinning
                                                                     # within a run only; encoders and pipeline
    .venv/bin/python -m edge.bench.compare search [--seconds 60]   # the frame graph's few-shot products: float32
                                                                     # vs int8; pipeline and graph alone vs encoder
    .venv/bin/python -m edge.bench.compare subspace [--seconds 60] # the few-shot search in all dimensions vs in
                                                                     # the subspace calibrate chose
    .venv/bin/python -m edge.bench.compare coarse [--seconds 60]   # the few-shot search at every patch vs coarse
                                                                     # to fine
      (subspace, coarse: --search float32|int8|auto, the frame graph both run; float32 unless told)
    .venv/bin/python -m edge.bench.compare paced  [--seconds 80]   # the bare encoder back to back vs paced at
                                                                     # 15 fps: its own p50 / p99 (latency's floor)

Prints one JSON object: the rate of each variant and after/before. On a shared machine only the ratio means much.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.grounding import anomaly


def compare_blas(seconds: float, rounds: int = 3) -> dict[str, Any]:
    """pipeline fps with `few_shot_scores` limited to one BLAS thread (after) vs BLAS's own thread count (before)."""
    from edge.bench.inference import bench_line, decode
    from edge.daemon import Daemon
    from edge.demo import default_pack_dir
    from edge.inspect.inspector import load_inspector

    controller = anomaly.ThreadpoolController
    if controller is None:
        raise SystemExit("threadpoolctl is not installed: nothing to compare")
    fps: dict[str, list[float]] = {"before": [], "after": []}
    with bench_line(default_pack_dir(), "cpu", 20, 40) as line:
        from edge.bench.inference import _pipeline_loop

        daemon = Daemon(line.cfg, load_inspector(line.cfg))
        for data in line.frames[:3]:
            daemon.inspector.inspect(decode(data))
        per = seconds / (2 * rounds)
        try:
            for _ in range(rounds):
                for variant in ("before", "after"):
                    anomaly.ThreadpoolController = None if variant == "before" else controller
                    anomaly._blas.clear()  # noqa: SLF001
                    n, s = _pipeline_loop(daemon, line.frames, per)
                    fps[variant].append(n / s)
        finally:
            anomaly.ThreadpoolController = controller
    before, after = sum(fps["before"]) / rounds, sum(fps["after"]) / rounds
    return {"change": "few- and zero-shot products on one BLAS thread", "pipeline_fps_before": round(before, 2),
            "pipeline_fps_after": round(after, 2), "after_over_before": round(after / before, 2)}


def compare_ingest(seconds: float, rounds: int = 2) -> dict[str, Any]:
    from edge.bench.station import bench_ingest

    fps: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for variant, batch in (("before", 1), ("after", 64)):
            fps[variant].append(bench_ingest(seconds / (2 * rounds), batch_items=batch)["ingest_fps"])
    before, after = sum(fps["before"]) / rounds, sum(fps["after"]) / rounds
    return {"change": "group commit (≤ 64 waiting items per transaction, parallel image fsyncs)",
            "ingest_fps_before": round(before, 1), "ingest_fps_after": round(after, 1),
            "after_over_before": round(after / before, 2),
            "note": "before = batch_items=1 on today's store (image fsyncs run serially for a single item)"}


def compare_grids(repeat: int = 300, rounds: int = 3) -> dict[str, Any]:
    """ms to bring the starter pack's stride-8 grid [256, 32, 32] to contiguous [32, 32, 256], both ways."""
    import time

    import numpy as np

    from edge.vlm.runtime import channels_last

    grid = np.random.default_rng(0).standard_normal((256, 32, 32)).astype(np.float32)
    variants = {"before": lambda: np.ascontiguousarray(grid.transpose(1, 2, 0)), "after": lambda: channels_last(grid)}
    ms: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, fn in variants.items():
            started = time.perf_counter()
            for _ in range(repeat):
                fn()
            ms[name].append(1000 * (time.perf_counter() - started) / repeat)
    before, after = sum(ms["before"]) / rounds, sum(ms["after"]) / rounds
    return {"change": "patch grid [D,h,w] -> [h,w,D] with cv2.transpose", "ms_before": round(before, 3),
            "ms_after": round(after, 3), "before_over_after": round(before / after, 1)}


def compare_preprocess(repeat: int = 300, rounds: int = 3) -> dict[str, Any]:
    """ms to bring a textile test frame to the starter pack's input: the NumPy formula (before) vs one OpenCV pass
    (edge.vlm.runtime.ImagePreprocessor, after); the same values."""
    import time

    import cv2
    import numpy as np

    from edge.bench.inference import decode, test_frames
    from edge.demo import default_pack_dir
    from edge.vlm.pack import load_pack
    from edge.vlm.runtime import ImagePreprocessor

    pack = load_pack(default_pack_dir())
    after = ImagePreprocessor.from_pack(pack)
    mean = np.asarray(pack.image["mean"], np.float32).reshape(3, 1, 1) * 255.0
    std = np.asarray(pack.image["std"], np.float32).reshape(3, 1, 1) * 255.0

    def before(bgr: np.ndarray) -> np.ndarray:
        img = cv2.cvtColor(cv2.resize(bgr, after.size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        return np.asarray(img.transpose(2, 0, 1).astype(np.float32) * (1.0 / std) + (-mean / std))

    frame = decode(test_frames(1)[0])
    diff = float(np.abs(before(frame) - after(frame)).max())
    ms: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, fn in (("before", before), ("after", after)):
            started = time.perf_counter()
            for _ in range(repeat):
                fn(frame)
            ms[name].append(1000 * (time.perf_counter() - started) / repeat)
    b, a = sum(ms["before"]) / rounds, sum(ms["after"]) / rounds
    return {"change": "preprocessing in one OpenCV pass (cv2.dnn.blobFromImageWithParams)",
            "frame": f"{frame.shape[1]}x{frame.shape[0]}", "ms_before": round(b, 3), "ms_after": round(a, 3),
            "before_over_after": round(b / a, 1), "max_abs_diff": diff}


def compare_regions(repeat: int = 10, rounds: int = 3) -> dict[str, Any]:
    """ms to cut the regions of a 32 × 32 map with a scratch and a spot on 0.25, 5 and 20 MP frames: at the frame's
    full size (before) vs at most 15 pixels a map cell (edge.grounding.regions.region_mask, after)."""
    import time

    import numpy as np

    from edge.grounding.anomaly import smooth
    from edge.grounding.regions import region_mask

    grid = smooth(np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32) * 2.0)
    grid[5:8, 20:26] += 6.0
    grid[25, 3] += 8.0
    out: dict[str, Any] = {"change": "regions cut at most 15 pixels a map cell, boxes scaled to the frame"}
    for w, h in ((500, 500), (2448, 2048), (5472, 3648)):
        ms: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for name, per_cell in (("before", None), ("after", 15)):
                started = time.perf_counter()
                for _ in range(repeat):
                    region_mask(grid, 1.5, w, h, 0.5, pixels_per_cell=per_cell)
                ms[name].append(1000 * (time.perf_counter() - started) / repeat)
        b, a = sum(ms["before"]) / rounds, sum(ms["after"]) / rounds
        out[f"{w}x{h}"] = {"ms_before": round(b, 2), "ms_after": round(a, 2), "before_over_after": round(b / a, 1)}
    return out


def compare_contrast(repeat: int = 20, rounds: int = 3) -> dict[str, Any]:
    """ms to draw one region's box around a 40 px spot's own pixels (edge.grounding.regions.contrast_box, k = 3,
    and its parts grown to 2 σ) for map boxes of 40–2,000 px on 0.25, 5 and 20 MP grainy frames (the map's box
    itself costs nothing more), and how far the drawn box is from the spot's (largest edge error, px)."""
    import time

    import numpy as np

    from edge.grounding.regions import Blob, contrast_box

    out: dict[str, Any] = {"change": "boxes drawn around the frame's pixels that stand out (contrast cut)"}
    for w, h in ((500, 500), (2448, 2048), (5472, 3648)):
        frame = np.random.default_rng(0).integers(100, 150, (h, w, 3), dtype=np.uint8)
        cx, cy = w // 2, h // 2
        frame[cy - 20:cy + 20, cx - 20:cx + 20] = 20
        for side in (40, 200, 1200, 2000):
            if side > min(w, h) - 40:
                continue
            box = Blob(cx - side // 2, cy - side // 2, side, side, side * side, 5.0, 1, float(cx), float(cy))
            measured: dict[str, Any] = {}
            for name, grow in (("", None), ("_grown", 2.0)):
                ms = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    for _ in range(repeat):
                        drawn = contrast_box(frame, box, 3.0, grow)
                    ms.append(1000 * (time.perf_counter() - started) / repeat)
                measured[f"ms{name}"] = round(min(ms), 2)
                measured[f"edge_error_px{name}"] = max(
                    abs(a - b) for a, b in zip((drawn.x, drawn.y, drawn.x + drawn.w, drawn.y + drawn.h),
                                               (cx - 20, cy - 20, cx + 20, cy + 20), strict=True))
            out[f"{w}x{h} box {side}"] = measured
    return out


def compare_spin(seconds: float, rounds: int = 4) -> dict[str, Any]:
    """Bare encoder frames/s, FP32 and INT8 (the bench's quantised pack), and pipeline frames/s (`Daemon.handle`,
    FP32), with the session's pool never spinning (before) and spinning within a run, stopped when it returns
    (after); the variants alternate in rounds (half the time for the encoders, half for the pipelines)."""
    from edge.bench.bench_quantized import quantised_pack
    from edge.bench.inference import _close, _pipeline_loop, bare_encoder_loop, bench_line, decode, test_frames
    from edge.daemon import Daemon
    from edge.demo import default_pack_dir
    from edge.inspect.inspector import load_inspector
    from edge.vlm import runtime
    from edge.vlm.pack import load_pack

    pack_dir = default_pack_dir()
    int8_dir, _ = quantised_pack(pack_dir, 30)
    variants = ("before", "after")
    with bench_line(pack_dir, "cpu", 20, 40) as line:
        encoders, daemons = {}, {}
        try:
            for variant in variants:
                runtime.SPIN_WITHIN_RUN = variant == "after"
                for tower, directory in (("fp32", pack_dir), ("int8", int8_dir)):
                    encoders[f"{tower}_{variant}"] = runtime.ImageEncoder(load_pack(directory), "cpu", quiet=True)
                outbox = line.cfg.transport.outbox_dir / variant  # one outbox per daemon
                cfg = line.cfg.model_copy(update={"transport": line.cfg.transport.model_copy(
                    update={"outbox_dir": outbox})})
                daemons[variant] = Daemon(cfg, load_inspector(cfg))
        finally:
            runtime.SPIN_WITHIN_RUN = True
        batch = encoders["fp32_after"].preprocess(decode(test_frames(1)[0]))[None]
        for daemon in daemons.values():
            for data in line.frames[:3]:
                daemon.inspector.inspect(decode(data))
        totals = {name: [0, 0.0] for name in [*encoders, *(f"pipeline_{v}" for v in variants)]}
        per_encoder = seconds / 2 / (len(encoders) * rounds)
        per_pipeline = seconds / 2 / (len(daemons) * rounds)
        for _ in range(rounds):
            for name, encoder in encoders.items():
                n, s = bare_encoder_loop(encoder, batch, per_encoder)
                totals[name][0] += n
                totals[name][1] += s
            for variant, daemon in daemons.items():
                n, s = _pipeline_loop(daemon, line.frames, per_pipeline)
                totals[f"pipeline_{variant}"][0] += n
                totals[f"pipeline_{variant}"][1] += s
        for daemon in daemons.values():
            _close(daemon)
    fps = {name: n / s for name, (n, s) in totals.items()}
    return {"change": "ONNX Runtime intra-op pool spins within a run and stops when it returns (was: never spins)",
            **{f"{name}_fps": round(v, 2) for name, v in fps.items()},
            "int8_over_fp32_before": round(fps["int8_before"] / fps["fp32_before"], 3),
            "int8_over_fp32_after": round(fps["int8_after"] / fps["fp32_after"], 3),
            "fp32_after_over_before": round(fps["fp32_after"] / fps["fp32_before"], 2),
            "int8_after_over_before": round(fps["int8_after"] / fps["int8_before"], 2),
            "pipeline_after_over_before": round(fps["pipeline_after"] / fps["pipeline_before"], 2)}


def _alternate(daemons: dict[str, Any], frames: list[bytes], seconds: float, rounds: int) -> dict[str, float]:
    """Frames/s of the bare encoder, of each daemon's pipeline (`Daemon.handle`) and of its frame graph alone, in
    alternating rounds in this process."""
    import time

    import numpy as np

    from edge.bench.inference import _pipeline_loop, bare_encoder_loop, decode

    encoder = next(iter(daemons.values())).inspector.image_encoder
    decoded = [decode(data) for data in frames]
    batch = np.asarray(encoder.preprocess(decoded[0])[None])
    outputs = encoder.run(batch)
    for daemon in daemons.values():
        for frame in decoded[:3]:
            daemon.inspector.inspect(frame)
    totals = {name: [0, 0.0] for name in ("encoder", *(f"{k}_{v}" for k in ("pipeline", "graph") for v in daemons))}
    per = seconds / (1 + 2 * len(daemons)) / rounds
    for _ in range(rounds):
        n, s = bare_encoder_loop(encoder, batch, per)
        totals["encoder"][0] += n
        totals["encoder"][1] += s
        for variant, daemon in daemons.items():
            n, s = _pipeline_loop(daemon, frames, per)
            totals[f"pipeline_{variant}"][0] += n
            totals[f"pipeline_{variant}"][1] += s
            graph, started, n = daemon.inspector.graph, time.perf_counter(), 0
            while time.perf_counter() - started < per:
                graph.run(outputs)
                n += 1
            totals[f"graph_{variant}"][0] += n
            totals[f"graph_{variant}"][1] += time.perf_counter() - started
    return {name: n / s for name, (n, s) in totals.items()}


def _ratios(change: str, fps: dict[str, float], variants: tuple[str, ...] = ("before", "after")) -> dict[str, Any]:
    return {"change": change, "encoder_fps": round(fps["encoder"], 2),
            **{f"pipeline_fps_{v}": round(fps[f"pipeline_{v}"], 2) for v in variants},
            **{f"graph_ms_{v}": round(1000 / fps[f"graph_{v}"], 2) for v in variants},
            **{f"pipeline_over_encoder_{v}": round(fps[f"pipeline_{v}"] / fps["encoder"], 3) for v in variants},
            "pipeline_after_over_before": round(fps["pipeline_after"] / fps["pipeline_before"], 2),
            "graph_before_over_after": round(fps["graph_after"] / fps["graph_before"], 2)}


def _daemon(cfg: Any, variant: str, **model: Any) -> Any:
    """A daemon of the bench line's config, with an outbox of its own and `model` settings changed."""
    from edge.daemon import Daemon
    from edge.inspect.inspector import load_inspector

    cfg = cfg.model_copy(update={
        "transport": cfg.transport.model_copy(update={"outbox_dir": cfg.transport.outbox_dir / variant}),
        "model": cfg.model.model_copy(update=model)})
    return Daemon(cfg, load_inspector(cfg))


def compare_search(seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Pipeline frames/s (`Daemon.handle`) and the frame graph's own time with the profile's float32 graph (before)
    and its int8 few-shot search (after), and the bare encoder, alternating in rounds in one process."""
    from edge.bench.inference import _close, bench_line
    from edge.demo import default_pack_dir

    with bench_line(default_pack_dir(), "cpu", 30, 60) as line:
        daemons = {"before": _daemon(line.cfg, "before", search="float32"),
                   "after": _daemon(line.cfg, "after", search="int8")}
        fps = _alternate(daemons, line.frames, seconds, rounds)
        for daemon in daemons.values():
            _close(daemon)
    return _ratios("the frame graph's few-shot products in int8 (model.search: int8) vs float32", fps)


def _two_profiles(seconds: float, rounds: int, search: str, search_subspace: bool = False,
                  coarse_to_fine: bool = False) -> tuple[dict[str, float], dict[str, str], Any]:
    """Frames/s (`_alternate`) of two daemons on profiles calibrated from the same 30 textile train good images:
    calibrate's default (before) and with calibrate's `search_subspace` / `coarse_to_fine` (after), both on the
    `search` graph (`line.model.search`); which graph each ran (`graph_run_<variant>`: `auto` decides at load);
    the after profile."""
    from edge.bench.inference import _close, bench_line
    from edge.demo import default_pack_dir

    with bench_line(default_pack_dir(), "cpu", 30, 60) as full, \
            bench_line(default_pack_dir(), "cpu", 30, 60, search_subspace=search_subspace,
                       coarse_to_fine=coarse_to_fine) as changed:
        daemons = {"before": _daemon(full.cfg, "before", search=search),
                   "after": _daemon(changed.cfg, "after", search=search)}
        fps = _alternate(daemons, changed.frames, seconds, rounds)
        graphs = {f"graph_run_{variant}": daemon.inspector.search for variant, daemon in daemons.items()}
        profile = daemons["after"].inspector.profile
        for daemon in daemons.values():
            _close(daemon)
    return fps, graphs, profile


def compare_subspace(seconds: float, rounds: int = 3, search: str = "float32") -> dict[str, Any]:
    """Pipeline frames/s and the frame graph's own time with two profiles calibrated from the same images: the
    few-shot search in all dimensions (before, calibrate's default) and in the subspace calibrate measured to
    reproduce it (after, `calibrate --search-subspace`); both on the `search` graph, and the bare encoder,
    alternating in rounds."""
    fps, graphs, profile = _two_profiles(seconds, rounds, search, search_subspace=True)
    return {**_ratios(f"the few-shot search in the subspace calibrate chose vs in all dimensions ({search} graph)",
                      fps), "search_dims": profile.metrics.get("search_dims"), **graphs}


def compare_coarse(seconds: float, rounds: int = 3, search: str = "float32") -> dict[str, Any]:
    """Pipeline frames/s and the frame graph's own time with two profiles calibrated from the same images: the
    few-shot search at every patch (before, calibrate's default) and coarse to fine (after, `calibrate
    --coarse-to-fine`); both on the `search` graph, and the bare encoder, alternating in rounds."""
    fps, graphs, profile = _two_profiles(seconds, rounds, search, coarse_to_fine=True)
    return {**_ratios(f"the few-shot search coarse to fine vs at every patch ({search} graph)", fps),
            "coarse_share": profile.coarse_share, **graphs}


def compare_paced(seconds: float, rounds: int = 2, fps: float = 15.0) -> dict[str, Any]:
    """The bare encoder's own run times (one textile test frame) back to back and paced at `fps` as a camera
    delivers frames, in alternating rounds: percentiles and p99/p50 of each. Nothing else runs in this process, so
    the paced p99/p50 is the floor this machine sets under the latency bench's decision p99/p50."""
    import time

    import numpy as np

    from edge.bench.inference import decode, test_frames
    from edge.demo import default_pack_dir
    from edge.vlm.pack import load_pack
    from edge.vlm.runtime import ImageEncoder

    encoder = ImageEncoder(load_pack(default_pack_dir()), "cpu", quiet=True)
    batch = encoder.preprocess(decode(test_frames(1)[0]))[None]
    for _ in range(10):
        encoder.run(batch)
    period = 1.0 / fps
    runs_ms: dict[str, list[float]] = {"back_to_back": [], "paced": []}
    per_round = max(1, int(seconds / (2 * rounds) * fps))  # runs per variant and round: the paced one's seconds
    for _ in range(rounds):
        for variant, times in runs_ms.items():
            for _ in range(per_round):
                started = time.perf_counter()
                encoder.run(batch)
                elapsed = time.perf_counter() - started
                times.append(elapsed * 1000)
                if variant == "paced":
                    time.sleep(max(0.0, period - elapsed))
    out: dict[str, Any] = {"change": f"the bare encoder back to back vs paced at {fps:g} fps (no change: a floor)",
                           "runs_per_variant": per_round * rounds}
    for variant, times in runs_ms.items():
        p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
        out.update({f"{variant}_p50_ms": round(p50, 2), f"{variant}_p90_ms": round(p90, 2),
                    f"{variant}_p99_ms": round(p99, 2), f"{variant}_p99_over_p50": round(p99 / p50, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("change", choices=("blas", "ingest", "grids", "preprocess", "regions", "contrast", "spin",
                                           "search", "subspace", "coarse", "paced"))
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--search", choices=("float32", "int8", "auto"), default="float32",
                    help="subspace, coarse: the frame graph both variants run (line.model.search)")
    args = ap.parse_args()
    runs = {"blas": lambda: compare_blas(args.seconds), "ingest": lambda: compare_ingest(args.seconds),
            "grids": compare_grids, "preprocess": compare_preprocess, "regions": compare_regions,
            "contrast": compare_contrast,
            "spin": lambda: compare_spin(args.seconds),
            "search": lambda: compare_search(args.seconds),
            "subspace": lambda: compare_subspace(args.seconds, search=args.search),
            "coarse": lambda: compare_coarse(args.seconds, search=args.search),
            "paced": lambda: compare_paced(args.seconds)}
    result = runs[args.change]()
    result["command"] = " ".join(["python -m edge.bench.compare", *sys.argv[1:]])
    from edge.bench.machine import machine

    result["machine"] = machine("cpu")
    print(json.dumps(result))


if __name__ == "__main__":
    main()


