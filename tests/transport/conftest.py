import time

import cv2
import numpy as np
import pytest

from edge.transport.schema import Region, ReviewItem


def make_item(seq: int, line: str = "line-1", uncertainty: float = 0.7) -> ReviewItem:
    return ReviewItem(
        frame_id=f"{line}:cam0:boot1:{seq}", line_id=line, source_id="cam0", seq=seq,
        captured_wall=time.time(), decided_wall=time.time(), width=64, height=48, verdict="spot",
        class_scores={"good": 0.4, "spot": 0.6}, anomaly_score=3.2, anomaly_threshold=3.0,
        uncertainty=uncertainty, reason="uncertain",
        regions=[Region(x=4, y=5, w=10, h=8, area_px=60, area_pct=1.95, peak=4.0, defect_class="spot",
                        location="upper-left", caption="spot, upper-left, 10×8 px (1.9 %)",
                        description="a small dark spot on", caption_score=0.31)],
        pack_version="starter@test", profile_version="line-1@v0001")


def make_jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def item_factory():
    return make_item


@pytest.fixture
def jpeg_factory():
    return make_jpeg
