"""Frame sources and the reconnecting capture thread.

    capture = CaptureThread(cfg.line.source)      # deliver_all=True for replays that must see every frame
    capture.start()
    while running:
        frame = capture.get(timeout=1.0)          # newest frame not seen before, or None
        ...
    capture.stop(); capture.join()
"""

from edge.capture.frame import Frame, as_bgr
from edge.capture.sources import (
    CorruptFrame,
    FrameSource,
    SourceEnded,
    SourceError,
    has_gstreamer,
    open_source,
    redact_url,
)
from edge.capture.thread import COUNTER_NAMES, SKIP_REASONS, CaptureThread

__all__ = [
    "COUNTER_NAMES",
    "SKIP_REASONS",
    "CaptureThread",
    "CorruptFrame",
    "Frame",
    "FrameSource",
    "SourceEnded",
    "SourceError",
    "as_bgr",
    "has_gstreamer",
    "open_source",
    "redact_url",
]
