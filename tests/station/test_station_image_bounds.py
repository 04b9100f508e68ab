"""The station's image reads are bounded: ingest refuses a JPEG or heat map whose header promises too many pixels
(read from the header, never decoded), and the console sends only a regular image file of a sane size."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path

import zmq
from fastapi.testclient import TestClient

from edge.station.console import create_app
from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.station.users import add_user
from edge.tools.hostile import png_bomb, with_jpeg_size
from edge.transport.schema import ReviewItem, encode_item

REPLY_MS = 10_000


def _reply(dealer: zmq.Socket, frames: list[bytes]) -> list[bytes]:
    dealer.send_multipart(frames)
    assert dealer.poll(REPLY_MS, zmq.POLLIN)
    return dealer.recv_multipart()


def test_ingest_refuses_a_jpeg_promising_too_many_pixels(
        ingest: IngestServer, dealer: zmq.Socket, store: Store, make_item: Callable[..., ReviewItem],
        jpeg: Callable[..., bytes]) -> None:
    item = make_item()
    giant = with_jpeg_size(jpeg(), 60_000, 60_000)  # 3.6 gigapixels in a few KB
    t = time.monotonic()
    reply = _reply(dealer, encode_item(item, giant))
    assert reply[:2] == [b"err", item.frame_id.encode()] and b"more than max_pixels" in reply[2]
    assert time.monotonic() - t < 2
    assert ingest.counters["malformed"] == 1 and store.queue.counts()["items"] == 0
    assert _reply(dealer, encode_item(item, jpeg())) == [b"ack", item.frame_id.encode()]  # the real one is fine


def test_ingest_refuses_a_heatmap_bomb(ingest: IngestServer, dealer: zmq.Socket, store: Store,
                                       make_item: Callable[..., ReviewItem], jpeg: Callable[..., bytes]) -> None:
    item = make_item()
    bomb = base64.b64encode(png_bomb(20_000, 20_000)).decode()
    assert len(bomb) < 64 * 1024  # small enough for the wire's size bound: only its header gives it away
    header = item.model_dump_json().replace('"heatmap_png":null', f'"heatmap_png":"{bomb}"').encode()
    reply = _reply(dealer, [b"item", header, jpeg()])
    assert reply[0] == b"err" and b"heatmap_png" in reply[2] and b"20000" in reply[2]
    assert store.queue.counts()["items"] == 0


def test_the_console_sends_no_device_or_oversized_file(store: Store, storage_dir: Path,
                                                       make_item: Callable[..., ReviewItem],
                                                       jpeg: Callable[..., bytes]) -> None:
    for _ in range(3):
        store.ingest.add_item(make_item(), jpeg())
    user = add_user(store, "ana", "ana password 123", "reviewer")
    app = create_app(store, storage_dir)
    codec = app.state.console.codec
    files = [store.queue.image_file(item_id) for item_id in (1, 2, 3)]
    assert all(f is not None and f.is_file() for f in files)
    os.unlink(files[1])  # type: ignore[arg-type]
    os.symlink("/dev/zero", files[1])  # type: ignore[arg-type]  # would stream for ever
    os.truncate(files[2], 64 * 2**20)  # type: ignore[arg-type]  # a sparse file far beyond any review image
    with TestClient(app, cookies={"lineside_session": codec.dumps(codec.new(user.id))}) as client:
        assert client.get("/images/1").status_code == 200
        t = time.monotonic()
        assert client.get("/images/2").status_code == 404
        assert client.get("/images/3").status_code == 404
        assert time.monotonic() - t < 2
    os.unlink(files[1])


def test_thumbnails_read_only_a_bounded_review_jpeg(tmp_path: Path, jpeg: Callable[..., bytes]) -> None:
    import pytest

    from edge.station.thumbnails import ThumbnailError, thumbnail

    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg(640, 480))
    assert thumbnail(good, 640, 480, max_side=320)[:2] == b"\xff\xd8"
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "giant.jpg").write_bytes(with_jpeg_size(jpeg(), 60_000, 60_000))
    for name, why in (("zero.jpg", "not a regular file"), ("giant.jpg", "60000 × 60000")):
        with pytest.raises(ThumbnailError, match=why):
            thumbnail(tmp_path / name, 640, 480)
