"""InferenceWorker: runs the models in a worker thread the daemon can give up on.

A model call that hangs (a wedged GPU driver, a TensorRT engine deadlock) must not hang the line silently. The daemon
hands each frame to ``inspect(image)``; when the answer takes longer than ``stuck_s`` the worker is declared stuck:
counted, logged, abandoned (Python cannot kill a thread; it is a daemon thread and dies with the process) and, after
a back-off that doubles from ``backoff_initial_s``, replaced by a fresh thread with a fresh inspector from
``factory`` (or the same one when there is no factory). More than ``max_restarts`` restarts within ``window_s``
raises WorkerGaveUp: the daemon then exits non-zero and systemd starts a clean process (frame Maintainer/watchdog
shape: restart what died, but not forever).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
R = TypeVar("R")


class InferenceStuck(RuntimeError):
    """One frame's inference took longer than the limit; the worker has been replaced."""


class WorkerGaveUp(RuntimeError):
    """The worker got stuck more often than allowed; the process should exit for its supervisor to restart it."""


class InferenceWorker(Generic[R]):
    def __init__(self, call: Callable[[Any], R], *, stuck_s: float, max_restarts: int, window_s: float,
                 backoff_initial_s: float = 1.0, factory: Callable[[], Callable[[Any], R]] | None = None,
                 name: str = "inference") -> None:
        self.call = call
        self.factory = factory
        self.stuck_s = stuck_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_initial_s = backoff_initial_s
        self.name = name
        self.restarts = 0
        self.stuck = 0
        self.busy_since: float | None = None  # monotonic start of the call in hand (None when idle)
        self._recent: deque[float] = deque()
        self._generation = 0
        self._jobs: queue.SimpleQueue[tuple[Any, Future[R]] | None] = queue.SimpleQueue()
        self._thread = self._spawn()

    def _spawn(self) -> threading.Thread:
        self._generation += 1
        self._jobs = queue.SimpleQueue()
        thread = threading.Thread(target=self._loop, args=(self._jobs, self.call),
                                  name=f"{self.name}-{self._generation}", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[tuple[Any, Future[R]] | None], call: Callable[[Any], R]) -> None:
        while (job := jobs.get()) is not None:
            arg, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(call(arg))
            except BaseException as exc:  # handed to the caller, who counts and logs it with the frame's context
                fut.set_exception(exc)

    def inspect(self, arg: Any, stop: threading.Event | None = None) -> R:
        """The call's result; InferenceStuck after a restart; WorkerGaveUp past the limit."""
        fut: Future[R] = Future()
        self.busy_since = time.monotonic()
        self._jobs.put((arg, fut))
        try:
            return fut.result(timeout=self.stuck_s)
        except FutureTimeout:
            self._restart(stop)
            raise InferenceStuck(f"{self.name}: no answer within {self.stuck_s:g} s; worker restarted "
                                 f"({self.restarts} restarts)") from None
        finally:
            self.busy_since = None

    def set_call(self, call: Callable[[Any], R]) -> None:
        """Use another call from the next frame on (e.g. a reloaded inspector); the caller is between frames."""
        self.call = call
        self._jobs.put(None)
        self._thread = self._spawn()

    def _restart(self, stop: threading.Event | None) -> None:
        self.stuck += 1
        now = time.monotonic()
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            log.critical("%s: stuck again after %d restarts within %g s; giving up", self.name, len(self._recent),
                         self.window_s)
            raise WorkerGaveUp(f"{self.name}: stuck {len(self._recent) + 1} times within {self.window_s:g} s")
        backoff = self.backoff_initial_s * 2 ** len(self._recent)
        self._recent.append(now)
        self.restarts += 1
        log.error("%s: stuck for %g s; abandoning thread %s, new worker in %.1f s", self.name, self.stuck_s,
                  self._thread.name, backoff)
        if backoff > 0 and stop is not None:
            stop.wait(backoff)
        elif backoff > 0:
            time.sleep(backoff)
        if self.factory is not None:
            self.call = self.factory()
        self._thread = self._spawn()

    def close(self) -> None:
        self._jobs.put(None)
