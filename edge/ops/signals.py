"""SIGTERM, SIGINT and SIGHUP handled on a thread of their own, never inside the interrupted main thread.

CPython runs a Python signal handler in the main thread between two bytecodes, so the handler can need a lock the
main thread already holds. ``threading.Event.set()`` from a SIGTERM handler hangs for ever when the signal lands
while the main thread is inside ``wait()`` on that same event (its Condition's ``Lock`` is not re-entrant): CI saw
``lineside station`` hang like that when it got SIGCONT and SIGTERM together, and a loop of SIGTERMs against a
plain ``while not stop.wait(t)`` reproduces it (about 1 in 300). Here the Python-level handler does nothing; the
interpreter's C handler writes the signal number to a pipe (``signal.set_wakeup_fd``) and ``SignalDispatcher``'s
thread reads it and runs the callback, taking what locks it likes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

SignalCallback = Callable[[signal.Signals], None]


def _wake_only(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing; the C handler has already written the signal number to the wakeup fd."""


class SignalDispatcher:
    """Run ``callbacks[signal]`` on the ``signals`` thread each time that signal arrives, until ``close()``.

    Start it from the main thread (Python only lets that one set handlers); ``close()`` puts back the handlers and
    the wakeup fd that were there before. Also a context manager.
    """

    def __init__(self, callbacks: Mapping[signal.Signals, SignalCallback]) -> None:
        self.callbacks = dict(callbacks)
        self._previous_handlers: dict[signal.Signals, Any] = {}
        self._previous_wakeup_fd = -1
        self._read_fd = self._write_fd = -1
        self._thread: threading.Thread | None = None

    def start(self) -> SignalDispatcher:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd's requirement: a signal never blocks on a full pipe
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self.callbacks:
            self._previous_handlers[signum] = signal.signal(signum, _wake_only)
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        os.close(self._write_fd)  # the thread reads end-of-file and returns
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> SignalDispatcher:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while data := os.read(self._read_fd, 64):
                for signum in data:
                    callback = self.callbacks.get(signum)  # type: ignore[call-overload]  # an IntEnum key
                    if callback is None:  # another signal with a Python handler also writes to the wakeup fd
                        continue
                    try:
                        callback(signal.Signals(signum))
                    except Exception:  # a failing callback must not end signal handling for the next signal
                        log.exception("signal %s: callback failed", signal.Signals(signum).name)
        finally:
            os.close(self._read_fd)
