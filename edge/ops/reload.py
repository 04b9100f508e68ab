"""Hot reload off the frame path: load a replacement when asked (SIGHUP) or when watched files change on disk, on a
side thread (new ONNX sessions take seconds while frames keep flowing), and hand it to the main loop to swap in
between frames. A load that fails returns None: it has counted and logged why, and the running one stays."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def file_stamp(path: Path) -> object:
    """What replacing a file changes (inode, mtime, size): stat only, no file is opened every few seconds."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Reloader(Generic[T]):
    def __init__(self, load: Callable[[], T | None], signature: Callable[[], object], watch_s: float,
                 name: str) -> None:
        self.load = load
        self.signature = signature
        self.watch_s = watch_s  # 0: no watching, only requests
        self.name = name
        self.requested = threading.Event()  # set from a signal callback
        self._seen = signature()
        self._watch_mono = time.monotonic()
        self._thread: threading.Thread | None = None
        self._prepared: T | None = None
        self._again = False

    def request(self) -> None:
        self.requested.set()

    def mark_seen(self) -> None:
        """The watched files as they are now count as loaded (a reload done synchronously)."""
        self._seen = self.signature()

    def poll(self, now: float) -> T | None:
        """Main loop, between frames: start a load on a request or a change on disk; a finished load's result."""
        if self.requested.is_set():
            self.requested.clear()
            self._start("SIGHUP")
        if self.watch_s > 0 and now - self._watch_mono >= self.watch_s:
            self._watch_mono = now
            if self.signature() != self._seen:
                self._start("new version on disk")
        thread = self._thread
        if thread is None or thread.is_alive():
            return None
        self._thread = None
        prepared, self._prepared = self._prepared, None
        if self._again:
            self._again = False
            self._start("change during the last reload")
        return prepared

    def _start(self, trigger: str) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._again = True  # another change arrived while loading: load once more afterwards
            return
        self._seen = self.signature()
        log.info("%s: reload (%s): loading off the frame path", self.name, trigger)

        def work() -> None:
            self._prepared = self.load()

        self._prepared = None
        self._thread = threading.Thread(target=work, name=f"reload-{self.name}", daemon=True)
        self._thread.start()
