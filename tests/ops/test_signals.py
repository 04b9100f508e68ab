"""SignalDispatcher: callbacks run on their own thread, so they may take locks the interrupted main thread holds."""

from __future__ import annotations

import os
import signal
import threading
import time

from edge.ops.signals import SignalDispatcher


def test_the_callback_can_take_a_lock_the_interrupted_main_thread_holds() -> None:
    # what hung `lineside station`: SIGTERM landing while the main thread held the lock of the Event that the
    # handler sets (Event.wait). A plain Lock shows the same: run in the main thread, the callback could not get it.
    lock = threading.Lock()
    got: list[tuple[bool, str]] = []
    done = threading.Event()

    def on_term(signum: signal.Signals) -> None:
        acquired = lock.acquire(timeout=5)
        got.append((acquired, threading.current_thread().name))
        if acquired:
            lock.release()
        done.set()

    with SignalDispatcher({signal.SIGTERM: on_term}):
        with lock:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.2)  # a Python-level handler would have run by now, in this thread, under this lock
            assert not got
        assert done.wait(5)
    assert got == [(True, "signals")]


def test_each_signal_reaches_its_own_callback_and_close_puts_the_old_handlers_back() -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGUSR1)}
    previous_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(previous_fd)
    seen: list[signal.Signals] = []
    arrived = threading.Semaphore(0)

    def record(signum: signal.Signals) -> None:
        seen.append(signum)
        arrived.release()

    def broken(_signum: signal.Signals) -> None:
        raise ValueError("a bug in a callback")

    dispatcher = SignalDispatcher({signal.SIGHUP: record, signal.SIGUSR1: broken}).start()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # fails in its callback: logged, and the next signal still handled
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGHUP)
            assert arrived.acquire(timeout=5)
    finally:
        dispatcher.close()
    assert seen == [signal.SIGHUP] * 3
    assert {s: signal.getsignal(s) for s in previous} == previous
    assert signal.set_wakeup_fd(previous_fd) == previous_fd


def test_only_the_main_thread_may_install_handlers() -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            SignalDispatcher({signal.SIGHUP: lambda _: None}).start()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert [str(e) for e in errors] == ["signal handlers can only be installed from the main thread"]
