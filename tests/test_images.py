"""The one bounded image reader on real files: what it refuses, why, and that it decides before decoding."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import ImageLimits
from edge.images import ImageError, decode_image, read_header, read_image
from edge.tools.hostile import png_bomb


def reason(path: Path, limits: ImageLimits | None = None) -> str:
    with pytest.raises(ImageError) as caught:
        read_image(path, limits)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
    return caught.value.reason


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize(("w", "h"), [(1, 1), (8000, 50), (37, 91)])
def test_header_dimensions_are_the_decoders(tmp_path: Path, suffix: str, w: int, h: int) -> None:
    path = tmp_path / f"x{suffix}"
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    assert cv2.imwrite(str(path), image)
    header = read_header(path.read_bytes())
    assert (header.width, header.height) == (w, h)
    assert read_image(path).shape == (h, w, 3)


def test_sixteen_bit_and_grey_come_back_as_8_bit_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 30), 200 * 257, np.uint16))
    image = read_image(tmp_path / "a.png")
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and int(image[0, 0, 0]) == 200


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30_000, 30_000))
    assert bomb.stat().st_size < 2_000_000  # 900 megapixels in under 2 MB
    t = time.monotonic()
    assert reason(bomb) == "too_many_pixels"
    assert time.monotonic() - t < 1.0  # a header read, not a decode


def test_pixel_and_size_caps_come_from_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 255, (100, 100, 3), np.uint8))
    assert reason(path, ImageLimits(max_pixels=9_999)) == "too_many_pixels"
    assert read_image(path, ImageLimits(max_pixels=10_000)).shape == (100, 100, 3)
    assert reason(path, ImageLimits(max_file_bytes=1024)) == "too_large"


def test_what_is_not_a_regular_file_is_never_read(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")  # never ends
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    os.mkfifo(tmp_path / "fifo.png")  # opening it for reading would block for ever
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.png"))
        t = time.monotonic()
        for name in ("dir.png", "zero.jpg", "dangling.jpg", "loop.jpg", "fifo.png", "sock.png"):
            assert reason(tmp_path / name) == "not_regular", name
        assert time.monotonic() - t < 1.0


def test_a_link_to_a_good_file_is_read(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "real.png"), np.zeros((5, 6, 3), np.uint8))
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    assert read_image(tmp_path / "link.png").shape == (5, 6, 3)


def test_empty_truncated_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    assert reason(tmp_path / "empty.png") == "empty"
    (tmp_path / "text.jpg").write_text("not an image at all")
    assert reason(tmp_path / "text.jpg") == "undecodable"
    ok, webp = cv2.imencode(".webp", np.zeros((8, 8, 3), np.uint8))
    assert ok
    (tmp_path / "webp.png").write_bytes(webp.tobytes())  # a format we do not take, whatever the name says
    assert reason(tmp_path / "webp.png") == "undecodable"
    png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[:20])  # the header and nothing else
    assert reason(tmp_path / "cut.png") == "undecodable"
    (tmp_path / "nohdr.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(5))
    assert reason(tmp_path / "nohdr.jpg") == "undecodable"


def test_a_file_gone_or_locked_is_unreadable(tmp_path: Path) -> None:
    assert reason(tmp_path / "listed-then-deleted.png") == "unreadable"
    path = tmp_path / "locked.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    path.chmod(0)
    if not os.access(path, os.R_OK):  # root reads files whatever their mode
        assert reason(path) == "unreadable"


def test_decode_checks_bytes_from_anywhere() -> None:
    bomb = png_bomb(20_000, 20_000)
    with pytest.raises(ImageError) as caught:
        decode_image(bomb, "item 7")
    assert caught.value.reason == "too_many_pixels" and str(caught.value).startswith("item 7: PNG of 20000 × 20000")
