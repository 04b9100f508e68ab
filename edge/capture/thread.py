"""CaptureThread: reads one source while it runs, keeps the newest frame for the consumer, reconnects."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import numpy as np

from edge.capture.frame import Frame
from edge.capture.sources import CorruptFrame, FrameSource, SourceEnded, SourceError, open_source
from edge.config import ImageLimits, SourceConfig

log = logging.getLogger(__name__)

# bad files and frames by reason (each a skip, never a source failure), then what is not about one frame
SKIP_REASONS = ("corrupt", "empty", "not_regular", "too_large", "too_many_pixels", "undecodable", "unreadable")
COUNTER_NAMES = ("captured", "dropped", *SKIP_REASONS, "resumed", "reconnects", "errors")
_LOGGED_MAX = 10_000  # bad files remembered so that a looping folder logs each once, not at every pass


class CaptureThread(threading.Thread):
    """One source, one daemon thread, one consumer.

    Latest-only (default): a one-frame slot; a newer frame replaces one the consumer has not taken yet
    (``dropped`` +1), so an inspector slower than the camera always sees the newest part, never a backlog.
    ``deliver_all=True``: the thread waits until the consumer has taken each frame — for replays where every
    frame must be inspected (evaluation, tests); pacing still applies.

    Counters: ``captured`` frames put in the slot, ``dropped`` replaced before being taken; frames and files
    skipped, one counter per reason: ``corrupt`` (decoded in a layout we cannot convert), ``empty`` (a read that
    gave no picture, a 0-byte file), and the bounded reader's ``not_regular``, ``too_large``, ``too_many_pixels``,
    ``undecodable``, ``unreadable`` (edge.images); ``resumed`` files or video frames passed over because a run
    before a restart decided them (``skip``); ``reconnects`` re-open attempts after a failure, ``errors``
    unexpected exceptions (each leads to a reconnect). Once ended, captured == frames returned by get() + dropped.
    A skipped file is logged once with its path and reason (a looping folder does not repeat it at every pass)
    and costs no pacing slot: the next file is read at once.

    A reopened file source goes on after the last file (or video frame) read, never from the start again.

    A broken source (SourceError, or any unexpected exception) is closed and reopened after a back-off that
    starts at ``reconnect_initial_s`` and doubles up to ``reconnect_max_s`` (±10 % jitter, so cameras that
    dropped together do not reconnect in lockstep); it resets once a reconnected source delivers a frame. One
    log line per change of ``status``, not one per retry.
    """

    def __init__(self, cfg: SourceConfig, *, deliver_all: bool = False, limits: ImageLimits | None = None,
                 skip: Callable[[str], bool] | None = None, after: object = None) -> None:
        super().__init__(name=f"capture-{cfg.id}", daemon=True)
        self.cfg = cfg
        self.deliver_all = deliver_all
        self.limits = limits
        self._skip = skip
        self._position: object = after  # where the last source got to: a reopened one goes on after it
        self._logged: set[tuple[str, str]] = set()
        self._cond = threading.Condition()  # guards everything below; get() and the producer wait on it
        self._stop_event = threading.Event()
        self._slot: Frame | None = None
        self._source_ended = False
        self._done = False  # run() has returned: nothing more will come
        self._seq = 0
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._status = "starting"
        self._last_error: str | None = None

    # ---- consumer side -------------------------------------------------------------------------------------

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not returned before; None after ``timeout`` s, at once if ended or stopped."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                remaining = deadline - time.monotonic()
                if self._source_ended or self._done or self._stop_event.is_set() or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a deliver_all producer is waiting for the slot to empty
            return frame

    def stop(self) -> None:
        """Ask the thread to finish, then join() it. A live source may need its read timeout to see it."""
        self._stop_event.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """True once a non-looping source has finished and its last frame has been taken."""
        with self._cond:
            return self._source_ended and self._slot is None

    @property
    def status(self) -> str:
        """'starting', 'connected', 'reconnecting: <reason>', 'ended' or 'stopped'."""
        with self._cond:
            return self._status

    @property
    def position(self) -> object:
        """Where a file source has got to (``after`` for a thread that replaces this one); None for live ones."""
        with self._cond:
            return self._position

    @property
    def last_error(self) -> str | None:
        with self._cond:
            return self._last_error

    @property
    def counters(self) -> dict[str, int | str | None]:
        """A consistent snapshot: the counters plus 'status' and 'last_error'."""
        with self._cond:
            return {**self._counts, "status": self._status, "last_error": self._last_error}

    # ---- producer side -------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._reconnect_loop()
        except Exception as exc:  # a bug in this module; still never escape the thread silently
            self._unexpected(exc, "capturing")
        finally:
            with self._cond:
                self._done = True
                if not self._source_ended:
                    self._set_status("stopped")
                self._cond.notify_all()  # wake a consumer blocked in get()

    def _reconnect_loop(self) -> None:
        delay = self.cfg.reconnect_initial_s
        first = True
        while not self._stop_event.is_set():
            if not first:
                self._count("reconnects")
            first = False
            captured_before = self._counts["captured"]
            reason = self._session()
            if reason is None:  # stopped or ended
                return
            if self._counts["captured"] > captured_before:
                delay = self.cfg.reconnect_initial_s  # it worked for a while: retry quickly again
            with self._cond:
                self._last_error = reason
                self._set_status(f"reconnecting: {reason}")
            if self._stop_event.wait(delay * random.uniform(0.9, 1.1)):
                return
            delay = min(delay * 2, self.cfg.reconnect_max_s)

    def _session(self) -> str | None:
        """Open the source and read it until it breaks: the reason it broke, or None when stopped or ended."""
        try:
            source = open_source(self.cfg, self.limits, after=self._position, skip=self._passed_over)
        except SourceError as exc:
            return str(exc)
        except Exception as exc:
            return self._unexpected(exc, "opening the source")
        with self._cond:
            self._set_status("connected", source.describe())
        try:
            self._read_until_stopped(source)
            return None
        except SourceEnded as exc:
            with self._cond:
                self._source_ended = True
                self._set_status("ended", str(exc))
                self._cond.notify_all()
            return None
        except SourceError as exc:
            return str(exc)
        except Exception as exc:
            return self._unexpected(exc, f"reading {source.origin}")
        finally:
            try:
                source.close()
            except Exception as exc:
                self._unexpected(exc, "closing the source")

    def _passed_over(self, origin: str) -> bool:
        if self._skip is None or not self._skip(origin):
            return False
        self._count("resumed")
        return True

    def _read_until_stopped(self, source: FrameSource) -> None:
        period = 1.0 / source.pace_hz if source.pace_hz else 0.0
        due = time.monotonic()
        while not self._stop_event.is_set():
            if period:
                wait = due - time.monotonic()
                if wait > 0 and self._stop_event.wait(wait):
                    return
            try:
                image = source.read()
            except CorruptFrame as exc:
                self._position = source.position
                self._skipped(exc)
                continue  # a skipped file costs no pacing slot
            self._position = source.position  # not after a SourceError: the file it broke on is read again
            if image is None:
                self._count("empty")
                continue
            if period:
                # The next deadline is one period after this one, not after now, so the pace does not drift.
                # More than a period behind (slow disk, a deliver_all consumer): restart the schedule rather
                # than burst to catch up.
                now = time.monotonic()
                due += period
                if due < now:
                    due = now + period
            self._publish(image, source.origin)

    def _skipped(self, exc: CorruptFrame) -> None:
        kind = exc.kind if exc.kind in SKIP_REASONS else "corrupt"
        self._count(kind)
        with self._cond:
            self._last_error = f"{self.cfg.kind} source '{self.cfg.id}': skipped ({kind}) {exc}"
            first = (exc.origin, kind) not in self._logged
            if first and len(self._logged) < _LOGGED_MAX:
                self._logged.add((exc.origin, kind))
        if first:
            log.warning("capture %s: skipped %s (%s)", self.cfg.id, exc, kind)

    def _publish(self, image: np.ndarray, origin: str) -> None:
        with self._cond:
            frame = Frame(self.cfg.id, self._seq, time.monotonic(), time.time(), image, origin)
            if self.deliver_all:
                while self._slot is not None and not self._stop_event.is_set():
                    self._cond.wait()  # get() and stop() notify
                if self._stop_event.is_set():
                    return
            elif self._slot is not None:
                self._counts["dropped"] += 1
            self._slot = frame
            self._seq += 1
            self._counts["captured"] += 1
            self._cond.notify_all()

    def _count(self, name: str) -> None:
        with self._cond:
            self._counts[name] += 1

    def _unexpected(self, exc: Exception, doing: str) -> str:
        label = f"{self.cfg.kind} source '{self.cfg.id}'"
        reason = f"{label}: unexpected {type(exc).__name__} while {doing}: {exc}"
        self._count("errors")
        with self._cond:
            self._last_error = reason
        log.error("capture %s: %s", self.cfg.id, reason, exc_info=exc)
        return reason

    def _set_status(self, status: str, detail: str | None = None) -> None:
        """Set the status (caller holds the lock); log changes only: a dead camera is one line, not many."""
        if status == self._status:
            return
        self._status = status
        text = f"capture {self.cfg.id}: {status}" + (f" ({detail})" if detail else "")
        log.log(logging.WARNING if status.startswith("reconnecting") else logging.INFO, "%s", text)
