"""Fault injection, short version: real edge and station processes over loopback TCP, one fault per scenario.

Each scenario streams a few hundred frames (the long version, ``python -m edge.tools.faults run --frames 10000``,
streams 10,000 with 60 s outages) and checks from the files that every frame routed to review is in the station's
database exactly once, with its own image, and that the edge's outbox drained to empty. About 45 s in all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.tools.faultproxy import ZmtpSplitter
from edge.tools.faults.harness import FaultOptions
from edge.tools.faults.processes import SCENARIOS, frame_jpeg
from edge.tools.faults.scenarios import results_table, run_scenario

SHORT = FaultOptions(frames=400, rate=250.0, outage_s=2.5, kills=3, ack_timeout_s=1.0, fsync="batch",
                     timeout_s=90.0)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_routed_frame_is_stored_once_and_the_outbox_drains(scenario: str, tmp_path: Path) -> None:
    result = run_scenario(scenario, tmp_path / scenario, SHORT)
    table = results_table([result])
    assert result.routed == SHORT.frames, table
    assert result.lost == 0, table
    assert result.duplicated == 0, table
    assert result.bad_images == 0, table
    assert result.outbox_left == 0, table
    assert result.edge_exit == 0, f"{table}\nsee {tmp_path / scenario}/edge-*.log"
    assert result.ok


def test_faults_that_were_asked_for_actually_happened(tmp_path: Path) -> None:
    """The duplicate/reorder proxy really duplicated messages and the station really settled them."""
    result = run_scenario("dup_reorder", tmp_path / "dup", FaultOptions(frames=150, rate=300.0, timeout_s=60.0))
    assert result.ok, results_table([result])
    proxy = next(n for n in result.notes if n.startswith("proxy:"))
    duplicated = int(proxy.split(" messages duplicated")[0].split()[-1])
    assert duplicated > 0, proxy


def test_zmtp_splitter_cuts_messages_at_frame_boundaries_however_bytes_arrive() -> None:
    greeting = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31
    command = b"\x04\x06" + b"\x05READY"
    long_body = b"x" * 300
    message = b"\x01\x04item" + b"\x02" + (len(long_body)).to_bytes(8, "big") + long_body  # MORE short, LONG last
    stream = greeting + command + message + message
    for step in (1, 7, 64, len(stream)):
        splitter = ZmtpSplitter()
        units = [u for i in range(0, len(stream), step) for u in splitter.feed(stream[i:i + step])]
        assert b"".join(u for u, _ in units) == stream
        assert [u for u, is_message in units if is_message] == [message, message]


def test_frame_jpeg_stays_a_jpeg_and_names_its_frame() -> None:
    import cv2
    import numpy as np

    from edge.tools.faults.processes import base_jpeg

    data = frame_jpeg(base_jpeg(), "faults:cam0:x:1")
    assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")
    assert b"faults:cam0:x:1" in data
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
