"""Inference benchmarks: the bare encoder and the whole per-frame pipeline (paced-input latency: edge.bench.latency).

Both run on real textile images (``edge.datasets``) with the starter pack on the CPU provider unless told
otherwise, and a line profile calibrated on the fly from textile *train* good images (never the test frames).
The pipeline and the bare encoder are measured in the same run, alternating in rounds, so that their ratio holds
on a shared machine whose absolute speed drifts.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.capture.frame import Frame
from edge.config import LineConfig, ModelConfig, RoutingConfig, SourceConfig, TransportConfig
from edge.datasets import textile_split
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder
from edge.vlm.vocabulary import load_vocabulary

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


@dataclass
class BenchLine:
    """A calibrated bench line: its config (temp outbox, profile) and the inspector the daemon would load."""

    cfg: LineConfig
    frames: list[bytes]  # JPEG bytes of textile test frames, decoded inside the timed loop


def test_frames(n: int) -> list[bytes]:
    """JPEG bytes of `n` textile test frames (mixed labels, fixed order)."""
    files = [p for p, _ in textile_split("test")]
    order = np.random.default_rng(0).permutation(len(files))[:n]
    return [files[i].read_bytes() for i in order]


@contextmanager
def bench_line(pack_dir: Path, provider: str, good_images: int, frames: int, say: Say = _quiet,
               review_threshold: float | None = None, station: str = "tcp://127.0.0.1:9",
               search_subspace: bool = False, coarse_to_fine: bool = False) -> Iterator[BenchLine]:
    """A temp directory with a profile calibrated from `good_images` textile train good images (`search_subspace`,
    `coarse_to_fine`: calibrate's, the few-shot search in fewer dimensions / at fewer patches)."""
    with tempfile.TemporaryDirectory(prefix="lineside-bench-") as tmp:
        root = Path(tmp)
        good = [p for p, label in textile_split("train") if label == "nominal"][:good_images]
        say(f"calibrating a bench profile from {len(good)} textile train good images …")
        # in a process of its own: fitting imports torch, and the bench's peak RSS is the daemon's share alone
        fit = multiprocessing.get_context("spawn").Process(target=_calibrate, name="bench-calibrate",
                                                           args=(pack_dir, good, root / "profile", provider,
                                                                 search_subspace, coarse_to_fine))
        fit.start()
        fit.join()
        if fit.exitcode != 0:
            raise RuntimeError(f"calibrating the bench profile failed (exit code {fit.exitcode})")
        routing = RoutingConfig() if review_threshold is None else RoutingConfig(review_threshold=review_threshold,
                                                                                 policy="threshold")
        cfg = LineConfig(id="bench", source=SourceConfig(kind="folder", path=root / "frames"),
                         model=ModelConfig(pack=pack_dir, provider=provider),
                         profile=root / "profile", routing=routing,
                         transport=TransportConfig(station=station, outbox_dir=root / "outbox"))
        yield BenchLine(cfg, test_frames(frames))


def _calibrate(pack_dir: Path, good: list[Path], profile_dir: Path, provider: str,
               search_subspace: bool = False, coarse_to_fine: bool = False) -> None:
    from edge.fit.calibrate import calibrate

    calibrate(load_pack(pack_dir), load_vocabulary(), good, "bench", profile_dir, provider=provider,
              search_subspace=search_subspace, coarse_to_fine_search=coarse_to_fine)


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("undecodable bench frame")
    return image


def bare_encoder_loop(encoder: ImageEncoder, batch: np.ndarray, seconds: float) -> tuple[int, float]:
    """(frames, seconds) of back-to-back `session.run` on one preprocessed input batch: nothing but the model."""
    names = encoder._names  # noqa: SLF001 - the bench measures the very session the daemon runs
    feed = {encoder._input: batch}  # noqa: SLF001
    encoder.session.run(names, feed)  # warm-up
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.session.run(names, feed)
        n += 1
    return n * batch.shape[0], time.perf_counter() - started


def bench_encoder(pack_dir: Path, provider: str = "cpu", seconds: float = 10.0, say: Say = _quiet) -> dict[str, Any]:
    pack = load_pack(pack_dir)
    encoder = ImageEncoder(pack, provider)
    batch = encoder.preprocess(decode(test_frames(1)[0]))[None]
    say(f"encoder: bare ONNX Runtime session for {seconds:g} s …")
    n, elapsed = bare_encoder_loop(encoder, batch, seconds)
    return {"encoder_fps": round(n / elapsed, 2), "encoder_ms": round(1000 * elapsed / n, 2),
            "provider": encoder.session.get_providers()[0]}


def _stage_times(daemon: Any, images: list[np.ndarray], repeat: int) -> dict[str, float]:
    """Median ms of each stage of one frame, measured apart (the pipeline loop measures them together)."""
    insp = daemon.inspector
    out: dict[str, list[float]] = {k: [] for k in ("preprocess", "encode", "ground", "inspect_total")}
    for i in range(repeat):
        bgr = images[i % len(images)]
        t0 = time.perf_counter()
        x = insp.image_encoder.preprocess(bgr)[None]
        t1 = time.perf_counter()
        outputs = insp.image_encoder.run(x)
        t2 = time.perf_counter()
        insp.graph.run(outputs)  # the profile's frame graph, as the inspector runs it
        t3 = time.perf_counter()
        insp.inspect(bgr)
        t4 = time.perf_counter()
        for key, value in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            value_ms = value * 1000
            out[key].append(value_ms)
    return {f"stage_{k}_ms": round(statistics.median(v), 2) for k, v in out.items()}


def bench_pipeline(pack_dir: Path, provider: str = "cpu", seconds: float = 20.0, good_images: int = 30,
                   frames: int = 60, rounds: int = 3, say: Say = _quiet) -> dict[str, Any]:
    """decode → encode → ground → caption → score → route → outbox write, through `Daemon.handle`.

    JPEG decode runs on a producer thread (as the capture thread does in the daemon); each consumer-side frame
    goes through the daemon's own `handle`: inspect, route with the line's default threshold; the daemon's outbox
    writer thread JPEG-encodes routed frames and puts them durably into the outbox, and each round's time runs
    until it has written them all. The bare encoder runs in the same process, alternating rounds.
    """
    from edge.daemon import Daemon
    from edge.inspect.inspector import load_inspector

    with bench_line(pack_dir, provider, good_images, frames, say) as line:
        daemon = Daemon(line.cfg, load_inspector(line.cfg))
        encoder = daemon.inspector.image_encoder
        images = [decode(b) for b in line.frames]
        batch = encoder.preprocess(images[0])[None]
        for image in images[:3]:
            daemon.handle(_frame(image, 0))  # warm-up
        enc_n = pipe_n = 0
        enc_s = pipe_s = 0.0
        per_round = seconds / (2 * rounds)
        for r in range(rounds):
            say(f"pipeline: round {r + 1}/{rounds}: bare encoder {per_round:.1f} s, pipeline {per_round:.1f} s")
            n, s = bare_encoder_loop(encoder, batch, per_round)
            enc_n, enc_s = enc_n + n, enc_s + s
            n, s = _pipeline_loop(daemon, line.frames, per_round)
            pipe_n, pipe_s = pipe_n + n, pipe_s + s
        stages = _stage_times(daemon, images, min(30, max(5, len(images))))
        _close(daemon)
        daemon.outbox.flush()
        counters = dict(daemon.counters)
        encoder_fps, pipeline_fps = enc_n / enc_s, pipe_n / pipe_s
        return {"encoder_fps": round(encoder_fps, 2), "pipeline_fps": round(pipeline_fps, 2),
                "pipeline_over_encoder": round(pipeline_fps / encoder_fps, 3),
                "pipeline_frames": pipe_n, "pipeline_routed": counters["routed"],
                "pipeline_errors": counters["errors"] + counters["outbox_errors"], **stages}


def _close(daemon: Any) -> None:
    """End the daemon's inference worker thread and its outbox writer (after writing what it holds), where this
    daemon has them: before the bench's temp outbox goes."""
    worker = getattr(daemon, "worker", None)
    if worker is not None and hasattr(worker, "close"):
        worker.close()
    sink = getattr(daemon, "sink", None)
    if sink is not None:
        sink.close(timeout=30.0)


def _frame(image: np.ndarray, seq: int, wall: float | None = None) -> Frame:
    return Frame("bench", seq, time.monotonic(), time.time() if wall is None else wall, image, f"bench frame {seq}")


def _pipeline_loop(daemon: Any, jpegs: list[bytes], seconds: float) -> tuple[int, float]:
    """Frames handled in `seconds` with a decode thread feeding a 4-deep queue, as the capture thread would."""
    frames: queue.Queue[Frame | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        seq = 0
        while not stop.is_set():
            image = decode(jpegs[seq % len(jpegs)])
            while not stop.is_set():
                try:
                    frames.put(_frame(image, seq), timeout=0.1)
                    break
                except queue.Full:
                    continue
            seq += 1

    producer = threading.Thread(target=produce, name="bench-decode", daemon=True)
    producer.start()
    n, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            daemon.handle(frames.get())
            n += 1
        daemon.sink.drain(30.0)  # the routed frames' JPEG and outbox write, on the writer thread, count too
        return n, time.perf_counter() - started
    finally:
        stop.set()
        producer.join(timeout=2)
