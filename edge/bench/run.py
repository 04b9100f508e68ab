"""Run benchmark parts and gather one JSON-ready result: the parts' keys, `machine` and `rss_mb`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.bench.machine import machine, rss_mb

PARTS = ("encoder", "pipeline", "latency", "ingest", "console", "int8", "batch", "review", "fit")
# `all`: every part but the browser review bench (it needs Chromium) and the fitting times (minutes): run them by name
ALL = PARTS[:-2]


@dataclass(frozen=True)
class BenchOptions:
    pack: Path
    provider: str = "cpu"
    seconds: float = 10.0  # per part (pipeline and latency: split over their rounds)
    fps: float = 15.0  # latency input rate
    good_images: int = 30  # calibration of the bench profile
    frames: int = 60  # distinct test frames cycled through
    senders: int = 4  # ingest DEALER sockets
    console_items: int = 100_000
    reviewed: int = 2000  # fit: reviewed frames `lineside train` learns from


def run_parts(parts: list[str], opts: BenchOptions, say: Callable[[str], None]) -> dict[str, Any]:
    from edge.bench import inference, station

    wanted = list(ALL) if "all" in parts else parts
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown bench part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)} or all")
    result: dict[str, Any] = {"parts": wanted, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "seconds_per_part": opts.seconds}
    daemon_rss: float | None = None
    for part in wanted:
        started = time.monotonic()
        if part == "encoder":
            result.update(inference.bench_encoder(opts.pack, opts.provider, opts.seconds, say))
        elif part == "pipeline":
            result.update(inference.bench_pipeline(opts.pack, opts.provider, opts.seconds, opts.good_images,
                                                   opts.frames, say=say))
            daemon_rss = rss_mb()  # the daemon's share: models, profile, outbox; before any station part runs
        elif part == "latency":
            from edge.bench.latency import bench_latency

            result.update(bench_latency(opts.pack, opts.provider, opts.seconds, opts.fps, opts.good_images,
                                        opts.frames, say))
        elif part == "ingest":
            result.update(station.bench_ingest(opts.seconds, opts.senders, say=say))
        elif part == "console":
            result.update(station.bench_console(opts.console_items, say=say))
        elif part == "review":  # edge/bench/review.py: Chromium plays an operator, one by one and grouped
            from edge.bench.review import bench_review

            result.update(bench_review(opts.pack, opts.frames, opts.console_items, say))
        elif part == "fit":  # edge/bench/fit.py: calibrate and train, each in a process of its own
            from edge.bench.fit import bench_fit

            result.update(bench_fit(opts.pack, opts.provider, reviewed=opts.reviewed, say=say))
        elif part in ("int8", "batch"):  # edge/bench/bench_quantized.py; imports onnx, so only when asked
            from edge.bench import bench_quantized as bq

            result.update(bq.bench_int8(opts.pack, opts.provider, opts.seconds, opts.good_images, opts.frames, say=say)
                          if part == "int8" else bq.bench_batch(opts.pack, opts.provider, opts.seconds,
                                                                opts.good_images, say=say))
        say(f"{part}: done in {time.monotonic() - started:.1f} s")
    result["rss_mb"] = daemon_rss if daemon_rss is not None else rss_mb()
    result["machine"] = machine(opts.provider)
    return result
