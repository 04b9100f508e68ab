"""Fixtures of the capture tests: threads that are always stopped, a closed loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from edge.capture import CaptureThread
from edge.config import SourceConfig
from edge.tools import net


@pytest.fixture
def running() -> Iterator[Callable[..., CaptureThread]]:
    """Start CaptureThreads through this and they are stopped and joined after the test, pass or fail."""
    threads: list[CaptureThread] = []

    def start(cfg: SourceConfig, **kw: bool) -> CaptureThread:
        thread = CaptureThread(cfg, **kw)
        threads.append(thread)
        thread.start()
        return thread

    yield start
    for thread in threads:
        thread.stop()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive(), f"{thread.name} did not stop"


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, read, released)."""
    return net.free_port()
