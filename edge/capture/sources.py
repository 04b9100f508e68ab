"""Frame sources: where images come from, behind one small interface.

``open_source(cfg)`` opens a source or raises SourceError. Then read it in a loop; ``read()``:

- returns an image (BGR uint8 H×W×3): the next frame; ``origin`` now names it;
- returns None: the backend answered but gave no picture (an empty frame) — count it and read on;
- raises CorruptFrame: this one frame (a file) cannot be used — count it by its ``kind`` and read on;
- raises SourceEnded: a non-looping folder or video is finished — do not read again;
- raises SourceError: the source is broken (stream dropped, folder gone) — close it and open a new one later.

Sources do not pace themselves; ``pace_hz`` says how often a file source should be read (None for live
sources, which the camera paces). Waiting in the caller lets a capture thread stop promptly and lets an
offline evaluation read a folder as fast as it can.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge.capture.frame import as_bgr
from edge.config import ImageLimits, SourceConfig
from edge.images import IMAGE_SUFFIXES, UNREADABLE, ImageError, read_image

# A live backend that keeps answering with empty frames is broken, and unpaced it would spin a core.
MAX_EMPTY_IN_A_ROW = 50


class SourceError(Exception):
    """The source cannot be opened or has broken; the message is one line naming the source."""


class SourceEnded(Exception):  # an end, not an error, hence no 'Error' suffix
    """A non-looping folder or video has delivered its last frame."""


class CorruptFrame(Exception):
    """One frame could not be read; the source itself is fine and the next read may succeed.

    ``kind`` says why, and is the counter it goes to: ``corrupt`` (decoded, but in a layout we cannot convert) or
    one of the bounded reader's reasons (edge.images.REASONS) for a file."""

    def __init__(self, origin: str, reason: str, kind: str = "corrupt") -> None:
        super().__init__(f"{origin}: {reason}")
        self.origin = origin
        self.reason = reason
        self.kind = kind


class FrameSource(Protocol):
    origin: str  # what the last read() read (file, "video frame N", URL, device); for logs and errors
    pace_hz: float | None  # read at this rate (folder, video); None: the device paces itself
    position: object  # where the last read() was (file name, frame index; None for live sources), for ``after``

    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...


def open_source(cfg: SourceConfig, limits: ImageLimits | None = None, *, after: object = None,
                skip: Callable[[str], bool] | None = None) -> FrameSource:
    """Open the source ``cfg`` describes; SourceError (one line naming kind, id and address) if it cannot.

    File sources (folder, video) read image files within ``limits``, go on after ``after`` (the ``position`` the
    previous source had reached: a reconnect never replays) and pass over what ``skip(origin)`` says was decided."""
    if cfg.kind == "folder":
        return FolderSource(cfg, limits, after=after, skip=skip)
    if cfg.kind == "video":
        return VideoFileSource(cfg, limits, after=after, skip=skip)
    return _open_device(cfg)


def _label(cfg: SourceConfig) -> str:
    return f"{cfg.kind} source '{cfg.id}'"


def _checked(image: np.ndarray | None, origin: str) -> np.ndarray | None:
    """None for an empty frame, BGR otherwise; a frame in a layout we cannot convert is a CorruptFrame."""
    if image is None or image.size == 0:
        return None
    try:
        return as_bgr(image)
    except ValueError as exc:
        raise CorruptFrame(origin, str(exc)) from None


class _FileSource:
    """What a folder and a video file share: a path, a pace, and where a reopened source goes on.

    ``after`` (the ``position`` of the last item read before a reconnect) makes a reopened source go on after it
    instead of at the start, so a reconnect never replays what was read; ``skip(origin)`` says an item was
    decided before a restart (a resumed batch) and is passed over unread."""

    def __init__(self, cfg: SourceConfig, limits: ImageLimits | None = None, *, after: object = None,
                 skip: Callable[[str], bool] | None = None) -> None:
        assert cfg.path is not None  # SourceConfig guarantees it for the file kinds
        self._cfg = cfg
        self._path = Path(cfg.path)
        self._label = _label(cfg)
        self._limits = limits or ImageLimits()
        # a looping source is no batch: nothing of it is "decided before"
        self._skip = skip if skip is not None and not cfg.loop else (lambda _origin: False)
        self.origin = str(self._path)
        self.pace_hz: float | None = cfg.fps
        self.position: object = after

    def close(self) -> None:
        pass

    def _describe(self, what: str) -> str:
        loop = ", loop" if self._cfg.loop else ""
        return f"{self._label}: {self._path} ({what}{self._cfg.fps:g} fps{loop})"


class FolderSource(_FileSource):
    """Image files of one folder in name order, each read through the bounded reader (edge.images); lists the
    folder again at every wrap so new files are seen. A file that cannot be used is a CorruptFrame with the
    reader's reason (not_regular, too_large, too_many_pixels, undecodable, empty, unreadable): the folder goes on
    with the next file. Only the folder itself gone or unlistable is a SourceError."""

    def __init__(self, cfg: SourceConfig, limits: ImageLimits | None = None, *, after: object = None,
                 skip: Callable[[str], bool] | None = None) -> None:
        super().__init__(cfg, limits, after=after, skip=skip)
        self._files = self._list()
        names = [p.name for p in self._files]
        self._next = bisect.bisect_right(names, after) if isinstance(after, str) else 0
        if self._next >= len(self._files) and self._cfg.loop:
            self._next = 0

    def _list(self) -> list[Path]:
        if not self._path.exists():
            raise SourceError(f"{self._label}: {self._path} does not exist")
        if not self._path.is_dir():
            raise SourceError(f"{self._label}: {self._path} is not a folder")
        try:
            files = sorted(p for p in self._path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise SourceError(f"{self._label}: cannot list {self._path}: {exc.strerror}") from None
        if not files:
            kinds = " ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"{self._label}: {self._path} holds no images ({kinds})")
        return files

    def read(self) -> np.ndarray | None:
        while True:
            if self._next >= len(self._files):
                if not self._cfg.loop:
                    raise SourceEnded(f"{self._label}: all {len(self._files)} images of {self._path} read")
                self._files = self._list()
                self._next = 0
            path = self._files[self._next]
            self._next += 1
            self.position = path.name
            self.origin = str(path)
            if not self._skip(self.origin):
                break
        try:
            image = read_image(path, self._limits)
        except ImageError as exc:
            if exc.reason == UNREADABLE and not self._path.is_dir():
                # the folder has gone (unmounted, deleted): a broken source, reopened later
                raise SourceError(f"{self._label}: {self._path} has disappeared") from None
            raise CorruptFrame(str(path), str(exc).removeprefix(f"{path}: "), exc.reason) from None
        return _checked(image, str(path))

    def describe(self) -> str:
        return self._describe(f"{len(self._files)} images, ")


class VideoFileSource(_FileSource):
    """A video file read frame by frame; looping reopens the file, which every container supports."""

    def __init__(self, cfg: SourceConfig, limits: ImageLimits | None = None, *, after: object = None,
                 skip: Callable[[str], bool] | None = None) -> None:
        super().__init__(cfg, limits, after=after, skip=skip)
        if not self._path.is_file():
            raise SourceError(f"{self._label}: {self._path} does not exist")
        self._cap = self._open()
        self._index = 0  # index in the file of the next frame
        self._start = after + 1 if isinstance(after, int) else 0  # frames to pass over after a reconnect

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self._path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self._label}: cannot open {self._path} as a video")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self._limits.max_pixels:  # from the container's header, before a frame is decoded
            cap.release()
            raise SourceError(f"{self._label}: {self._path} has frames of {width} × {height} pixels, more than "
                              f"max_pixels {self._limits.max_pixels}")
        return cap

    def _origin(self, index: int) -> str:
        return f"{self._path} frame {index}"

    def read(self) -> np.ndarray | None:
        # frames read before a reconnect, or decided before a restart, are passed over without decoding
        while self._index < self._start or self._skip(self._origin(self._index)):
            if not self._cap.grab():
                break
            self._index += 1
        ok, image = self._cap.read()
        if not ok and self._index > 0:
            if not self._cfg.loop:
                raise SourceEnded(f"{self._label}: {self._path} read to its end ({self._index} frames)")
            self._cap.release()
            self._cap = self._open()
            self._index = self._start = 0
            ok, image = self._cap.read()
        if not ok:  # nothing at the start of the file: looping would spin, so report it as a broken source
            raise SourceError(f"{self._label}: {self._path} has no readable frames")
        self.origin = self._origin(self._index)
        self.position = self._index
        self._index += 1
        return _checked(image, self.origin)

    def close(self) -> None:
        self._cap.release()

    def describe(self) -> str:
        return self._describe("")


class DeviceSource:
    """A live cv2.VideoCapture (camera, RTSP/HTTP, GStreamer pipeline); a failed read is a broken source."""

    def __init__(self, cap: cv2.VideoCapture, label: str, origin: str) -> None:
        self._cap = cap
        self._label = label
        self.origin = origin
        self.pace_hz: float | None = None
        self.position: object = None
        self._empty_in_a_row = 0

    def read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok:
            raise SourceError(f"{self._label}: no frame from {self.origin} (disconnected or read timed out)")
        checked = _checked(image, self.origin)
        self._empty_in_a_row = self._empty_in_a_row + 1 if checked is None else 0
        if self._empty_in_a_row >= MAX_EMPTY_IN_A_ROW:
            raise SourceError(f"{self._label}: {MAX_EMPTY_IN_A_ROW} empty frames in a row from {self.origin}")
        return checked

    def close(self) -> None:
        self._cap.release()

    def describe(self) -> str:
        return f"{self._label}: {self.origin}"


def _open_device(cfg: SourceConfig) -> DeviceSource:
    label = _label(cfg)
    if cfg.kind == "camera":
        device: int | str = cfg.device if cfg.device is not None else 0
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        origin = f"/dev/video{device}" if isinstance(device, int) else device
        if not Path(origin).exists():
            raise SourceError(f"{label}: {origin} does not exist")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        what = origin
    elif cfg.kind in ("rtsp", "http"):
        assert cfg.url is not None
        origin = redact_url(cfg.url)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(cfg.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(cfg.read_timeout_s * 1000)]
        cap = cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, params)
        what = f"{origin} (open timeout {cfg.open_timeout_s:g} s)"
    else:  # gstreamer
        assert cfg.pipeline is not None
        if not has_gstreamer():
            raise SourceError(f"{label}: this OpenCV was built without GStreamer (cv2.getBuildInformation() "
                              "says 'GStreamer: NO'); use an OpenCV build with GStreamer, e.g. the system's "
                              "python3-opencv or JetPack's")
        origin = cfg.pipeline
        cap = cv2.VideoCapture(cfg.pipeline, cv2.CAP_GSTREAMER)
        what = f"pipeline '{origin}'"
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{label}: cannot open {what}")
    if cfg.kind == "camera":
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)  # a request; the driver picks its nearest mode
    return DeviceSource(cap, label, origin)


def has_gstreamer() -> bool:
    """Whether this OpenCV build has the GStreamer video backend (pip wheels do not)."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def redact_url(url: str) -> str:
    """The URL with any password replaced by '***', so camera credentials stay out of logs and the station."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
