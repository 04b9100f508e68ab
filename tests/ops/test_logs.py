"""RateLimitedLog: one line per key and interval, and the next line says how many were held back."""

from __future__ import annotations

import logging

import pytest

from edge.ops.logs import RateLimitedLog


def test_one_line_per_key_and_interval_then_the_count_of_the_held_back(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.ratelimited")
    limited = RateLimitedLog(log, interval_s=0.0)  # every call is past the interval: nothing held
    with caplog.at_level(logging.WARNING, logger=log.name):
        limited.warning("a", "refused %s", "peer-1")
        limited.error("a", "disk full")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "refused peer-1"), (logging.ERROR, "disk full")]

    caplog.clear()
    limited = RateLimitedLog(log, interval_s=3600.0)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            limited.error("disk", "cannot store %s", "frame")
        limited.warning("peer", "refused")  # another key has its own interval
    assert [r.getMessage() for r in caplog.records] == ["cannot store frame", "refused"]

    limited._last["disk"] -= 7200.0  # the interval has passed for "disk"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=log.name):
        limited.error("disk", "cannot store %s", "frame")
    assert [r.getMessage() for r in caplog.records] == ["cannot store frame (2 more like it in the last 3600 s)"]
