"""Shared fixtures for the station tests: real ReviewItems, real JPEGs, a real SQLite store in a temp dir."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.transport.schema import Region, ReviewItem
from tests.station.console_support import BROWSER_ARGS, CHROMIUM, TEST_OUTPUT, need_chromium

_seq = itertools.count(1)


def _jpeg(width: int = 250, height: int = 250, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 128, np.uint8)
    img += rng.integers(0, 40, size=img.shape, dtype=np.uint8)
    cv2.line(img, (30, 40), (90, 52), (20, 20, 20), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@pytest.fixture
def jpeg() -> Callable[..., bytes]:
    return _jpeg


def _region(**over: Any) -> Region:
    data: dict[str, Any] = dict(x=30, y=38, w=62, h=18, area_px=1116, area_pct=1.8, peak=0.91,
                                defect_class="crack", location="upper-left",
                                caption="crack, upper-left, 62×18 px (1.8 %)",
                                description="a close-up photo of a cracked textile surface",
                                caption_score=0.312)
    data.update(over)
    return Region(**data)


@pytest.fixture
def region() -> Callable[..., Region]:
    return _region


def _item(**over: Any) -> ReviewItem:
    seq = next(_seq)
    now = time.time()
    data: dict[str, Any] = dict(
        frame_id=f"line-1:cam0:boot1:{seq}", line_id="line-1", source_id="cam0", seq=seq,
        captured_wall=now - 120, decided_wall=now - 119.9, width=250, height=250, verdict="crack",
        class_scores={"good": 0.31, "crack": 0.52, "spot": 0.17}, anomaly_score=0.64, anomaly_threshold=0.5,
        uncertainty=0.6, reason="uncertain", regions=[_region()], pack_version="starter-0.1.0",
        profile_version="line-1/v3")
    data.update(over)
    return ReviewItem(**data)


@pytest.fixture
def make_item() -> Callable[..., ReviewItem]:
    return _item


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'station.db'}"


@pytest.fixture
def store(db_url: str, storage_dir: Path) -> Iterator[Store]:
    s = Store(db_url, storage_dir)
    yield s
    s.close()


@pytest.fixture
def ingest(store: Store) -> Iterator[IngestServer]:
    """A real ingest server on a free loopback port, storing into `store`."""
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=20)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dealer(ingest: IngestServer) -> Iterator[zmq.Socket]:
    """A real edge-side DEALER connected to `ingest`."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(ingest.endpoint)
    yield sock
    sock.close()
    ctx.term()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for the console browser tests (screenshots go to TEST_OUTPUT)."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    TEST_OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
