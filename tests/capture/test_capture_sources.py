"""Frame sources read directly: files, video, error messages. Real files and real OpenCV throughout."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_helpers import SIZE, folder_cfg, level, write_images, write_video

from edge.capture import (
    CorruptFrame,
    SourceEnded,
    SourceError,
    as_bgr,
    has_gstreamer,
    open_source,
    redact_url,
)
from edge.config import SourceConfig


def read_all(cfg: SourceConfig, limit: int = 100) -> list[tuple[str, np.ndarray | None | Exception]]:
    """(origin, image or the CorruptFrame raised) for every read until SourceEnded."""
    source = open_source(cfg)
    out: list[tuple[str, np.ndarray | None | Exception]] = []
    try:
        for _ in range(limit):
            try:
                image = source.read()
                out.append((source.origin, image))  # origin names what read() just read
            except CorruptFrame as exc:
                out.append((source.origin, exc))
            except SourceEnded:
                return out
    finally:
        source.close()
    raise AssertionError("source did not end")


def test_folder_reads_images_in_name_order(tmp_path: Path) -> None:
    write_images(tmp_path, 3, start=2)
    write_images(tmp_path, 2, start=0)  # written later, sorted first
    (tmp_path / "notes.txt").write_text("not an image")
    got = read_all(folder_cfg(tmp_path))
    assert [Path(origin).name for origin, _ in got] == [f"img_{i:03d}.png" for i in range(5)]
    for i, (_, image) in enumerate(got):
        assert isinstance(image, np.ndarray)
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        assert int(image[0, 0, 0]) == level(i)


def test_folder_converts_grey_and_bgra_to_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a_grey.png"), np.full(SIZE, 77, np.uint8))
    cv2.imwrite(str(tmp_path / "b_bgra.png"), np.full((*SIZE, 4), 99, np.uint8))
    cv2.imwrite(str(tmp_path / "c_16bit.tif"), np.full(SIZE, 200 * 257, np.uint16))
    images = [image for _, image in read_all(folder_cfg(tmp_path))]
    for image in images:
        assert isinstance(image, np.ndarray) and image.shape == (*SIZE, 3) and image.dtype == np.uint8
    assert [int(image[0, 0, 0]) for image in images] == [77, 99, 200]  # type: ignore[index]


def test_as_bgr_layouts() -> None:
    assert as_bgr(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.full((4, 5, 3), 0x1234, np.uint16))[0, 0, 0] == 0x12
    with pytest.raises(ValueError, match="float32"):
        as_bgr(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_bgr(np.zeros((4, 5, 2), np.uint8))


def test_corrupt_and_empty_files_raise_corrupt_frame_naming_the_file(tmp_path: Path) -> None:
    write_images(tmp_path, 1, start=0)
    (tmp_path / "img_001.jpg").write_bytes(os.urandom(2000))
    (tmp_path / "img_002.png").write_bytes(b"")
    write_images(tmp_path, 1, start=3)
    got = read_all(folder_cfg(tmp_path))
    kinds = [type(x).__name__ for _, x in got]
    assert kinds == ["ndarray", "CorruptFrame", "CorruptFrame", "ndarray"]
    bad, empty = got[1][1], got[2][1]
    assert isinstance(bad, CorruptFrame) and isinstance(empty, CorruptFrame)
    assert bad.origin == str(tmp_path / "img_001.jpg") and "not a JPEG, PNG, BMP or TIFF" in bad.reason
    assert (bad.kind, empty.kind) == ("undecodable", "empty")
    assert str(empty) == f"{tmp_path / 'img_002.png'}: empty file (0 bytes)"
    assert "\n" not in str(bad)


def test_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "x" / "y"
    with pytest.raises(SourceError) as info:
        open_source(folder_cfg(missing))
    assert str(info.value) == f"folder source 'cam0': {missing} does not exist"


def test_folder_without_images_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="holds no images"):
        open_source(folder_cfg(tmp_path))
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(SourceError, match="is not a folder"):
        open_source(folder_cfg(tmp_path / "f.png"))


def test_folder_loop_wraps_and_describes_itself(tmp_path: Path) -> None:
    write_images(tmp_path, 2)
    source = open_source(folder_cfg(tmp_path, loop=True, fps=5))
    names = []
    for _ in range(5):
        source.read()
        names.append(Path(source.origin).name)
    assert names == ["img_000.png", "img_001.png"] * 2 + ["img_000.png"]
    assert source.pace_hz == 5
    assert source.describe() == f"folder source 'cam0': {tmp_path} (2 images, 5 fps, loop)"


def test_video_file_reads_every_frame_then_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 5)
    got = read_all(SourceConfig(kind="video", path=video))
    assert [origin for origin, _ in got] == [f"{video} frame {i}" for i in range(5)]
    for i, (_, image) in enumerate(got):
        assert isinstance(image, np.ndarray) and image.shape == (*SIZE, 3)
        assert abs(float(image.mean()) - level(i)) < 6  # MJPG is lossy


def test_video_file_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 3)
    source = open_source(SourceConfig(kind="video", path=video, loop=True))
    means = []
    for _ in range(7):
        image = source.read()
        assert image is not None
        means.append(round(float(image.mean()) / 10))
    source.close()
    assert means == [0, 1, 2, 0, 1, 2, 0]


def test_video_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(SourceConfig(kind="video", id="v", path=tmp_path / "none.avi"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(os.urandom(4000))
    with pytest.raises(SourceError, match=r"video source 'v': .*junk\.avi"):
        read_all(SourceConfig(kind="video", id="v", path=junk))


def test_stream_that_cannot_open_is_a_source_error(free_port: int) -> None:
    url = f"rtsp://127.0.0.1:{free_port}/x"
    with pytest.raises(SourceError, match=f"rtsp source 'cam0': cannot open {url}"):
        open_source(SourceConfig(kind="rtsp", url=url, open_timeout_s=0.3, read_timeout_s=0.3))
    with pytest.raises(SourceError, match="http source 'cam0': cannot open"):
        open_source(SourceConfig(kind="http", url=f"http://127.0.0.1:{free_port}/mjpg", open_timeout_s=0.3))


def test_missing_camera_device() -> None:
    with pytest.raises(SourceError, match="camera source 'cam0': /dev/video77 does not exist"):
        open_source(SourceConfig(kind="camera", device=77))
    with pytest.raises(SourceError, match="/dev/video78 does not exist"):
        open_source(SourceConfig(kind="camera", device="/dev/video78"))


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer; the message is for builds without")
def test_gstreamer_without_gstreamer_says_so() -> None:
    with pytest.raises(SourceError, match="built without GStreamer"):
        open_source(SourceConfig(kind="gstreamer", pipeline="videotestsrc ! videoconvert ! appsink"))


def test_urls_lose_their_password_in_logs() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact_url("rtsp://u:p@[fe80::1]:554/s") == "rtsp://u:***@[fe80::1]:554/s"


def test_a_video_of_frames_beyond_max_pixels_is_refused_before_a_frame_is_decoded(tmp_path: Path) -> None:
    from edge.config import ImageLimits

    video = write_video(tmp_path / "clip.avi", 2)
    with pytest.raises(SourceError, match=r"frames of 32 × 24 pixels, more than max_pixels 700"):
        open_source(SourceConfig(kind="video", path=video), ImageLimits(max_pixels=700))
    assert open_source(SourceConfig(kind="video", path=video), ImageLimits(max_pixels=768)).read() is not None
