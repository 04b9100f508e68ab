"""`Store.add_items` and the ingest server's group commit: exactly once, ack only after commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.transport.schema import KIND_ACK, Region, ReviewItem, encode_item


def _jpeg() -> bytes:
    img = np.full((250, 250, 3), 128, np.uint8)
    img += np.random.default_rng(0).integers(0, 40, size=img.shape, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _region() -> Region:
    return Region(x=30, y=38, w=62, h=18, area_px=1116, area_pct=1.8, peak=0.91, defect_class="crack",
                  location="upper-left", caption="crack, upper-left, 62×18 px (1.8 %)", description="a crack",
                  caption_score=0.3)


def _item(n: int, **over: Any) -> ReviewItem:
    data: dict[str, Any] = dict(frame_id=f"line-1:cam0:b1:{n}", line_id="line-1", source_id="cam0", seq=n,
                                captured_wall=1.0, decided_wall=1.0, width=250, height=250, verdict="crack",
                                class_scores={"good": 0.3, "crack": 0.7}, anomaly_score=2.0, anomaly_threshold=1.0,
                                uncertainty=0.6, pack_version="p", profile_version="v", regions=[_region()])
    data.update(over)
    return ReviewItem(**data)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/station.db", tmp_path / "images")
    yield s
    s.close()


def test_add_items_stores_each_once(store: Store) -> None:
    jpeg = _jpeg()
    assert store.ingest.add_item(_item(1), jpeg)
    batch = [(_item(1), jpeg), (_item(2), jpeg), (_item(3), jpeg), (_item(2), jpeg)]
    assert store.ingest.add_items(batch) == [False, True, True, False]  # known, new, new, repeated in the batch
    assert store.ingest.add_items(batch) == [False, False, False, False]
    assert store.queue.counts()["items"] == 3
    for n in (2, 3):
        view = next(v for v in store.queue.list_items() if v.frame_id == f"line-1:cam0:b1:{n}")
        assert len(view.regions) == 1
        path = store.queue.image_file(view.id)
        assert path is not None and path.read_bytes() == jpeg  # the image is on disk with its row


def test_add_items_failure_commits_nothing(store: Store, tmp_path: Path) -> None:
    (tmp_path / "images" / "bad-line").write_bytes(b"a file where a line directory should be")
    batch = [(_item(1), _jpeg()), (_item(2, line_id="bad-line"), _jpeg())]
    with pytest.raises(OSError):
        store.ingest.add_items(batch)
    assert store.queue.counts()["items"] == 0


def test_ingest_group_commit_acks_good_items_of_a_failed_batch(store: Store, tmp_path: Path,
                                                                 ) -> None:
    """Many items queued at once share a commit; a batch with one unstorable item still acks all the others,
    and never the unstorable one (the edge keeps it and retries)."""
    (tmp_path / "images" / "bad-line").write_bytes(b"not a directory")
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=20)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    items = [_item(n) for n in range(40)] + [_item(99, line_id="bad-line")] + [_item(5)]  # 5 twice
    for item in items:
        sock.send_multipart(encode_item(item, _jpeg()))
    server.start()  # everything is queued before the loop runs: the first receive takes a batch
    acked: list[str] = []
    try:
        while sock.poll(1500):
            kind, frame_id = sock.recv_multipart()[:2]
            assert kind == KIND_ACK
            acked.append(frame_id.decode())
    finally:
        server.stop()
        sock.close()
        ctx.term()
    assert sorted(acked) == sorted(i.frame_id for i in items if i.line_id == "line-1")
    assert store.queue.counts()["items"] == 40
    counters = server.counters
    assert counters["stored"] == 40 and counters["duplicates"] == 1 and counters["errors"] == 1


def test_sink_without_add_items_still_works(store: Store) -> None:
    class OneByOne:
        def __init__(self) -> None:
            self.calls = 0

        def add_item(self, item: ReviewItem, jpeg: bytes) -> bool:
            self.calls += 1
            return store.ingest.add_item(item, jpeg)

    sink = OneByOne()
    server = IngestServer(sink, "tcp://127.0.0.1:0", poll_ms=20)
    server._handle_batch([([b"peer", *encode_item(_item(n), _jpeg())], "peer") for n in range(3)])
    server.stop()
    assert sink.calls == 3 and store.queue.counts()["items"] == 3


