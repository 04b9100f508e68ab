"""Real image files, a real video and small helpers for the capture tests (a unique module name, so it
cannot clash with other test folders' helpers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.capture import CaptureThread, Frame
from edge.config import SourceConfig

SIZE = (24, 32)  # H, W


def level(i: int) -> int:
    """The grey level image i is filled with, so a frame says which file it came from."""
    return (10 * i) % 250


def write_images(folder: Path, n: int, start: int = 0, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img_{i:03d}{suffix}"
        assert cv2.imwrite(str(path), np.full((*SIZE, 3), level(i), np.uint8))
        paths.append(path)
    return paths


def write_video(path: Path, n: int) -> Path:
    """An MJPG .avi of n frames, frame i filled with level(i) (lossy, so compare with a tolerance)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE[1], SIZE[0]))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((*SIZE, 3), level(i), np.uint8))
    writer.release()
    return path


def folder_cfg(path: Path, **kw: object) -> SourceConfig:
    return SourceConfig(kind="folder", path=path, **kw)  # type: ignore[arg-type]


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def collect(thread: CaptureThread, n: int | None = None, timeout: float = 10.0,
            pause: float = 0.0) -> list[Frame]:
    """Frames from get() until n are collected or the source has ended; sleeps ``pause`` after each one."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while (n is None or len(frames) < n) and time.monotonic() < deadline:
        frame = thread.get(timeout=0.5)
        if frame is None:
            if thread.ended:
                break
            continue
        frames.append(frame)
        if pause:
            time.sleep(pause)
    return frames
