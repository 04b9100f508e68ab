"""Image files in, bounded: what counts as an image file, listing a folder of them, and reading one (BGR, 8-bit,
3 channels) without letting a hostile or broken file take the process down.

Every place an image file enters lineside reads it here: the folder source, calibrate, train, eval, quantise and
the scripts; the station checks what it is sent with ``read_header``. ``read_image`` only ever decodes

- a regular file (after resolving links): a directory, a device, a FIFO or a socket named like an image is
  refused before it is opened for reading, and again on the open descriptor (a file swapped in between);
- of at most ``max_file_bytes`` (read through the descriptor, never more than that plus one byte);
- in one of the formats of ``IMAGE_SUFFIXES`` by its content (JPEG, PNG, BMP, TIFF; anything else — WebP, EXR,
  a text file named ``.jpg`` — never reaches a decoder);
- whose width × height, read from its header by the small parsers below, is at most ``max_pixels``. That is
  checked before the decoder runs, so a 30,000 × 30,000 PNG of 1 MB costs a header read, not 7 GB of RAM.

A refusal is an ``ImageError`` whose ``reason`` names the kind (``REASONS``): the folder source counts each kind
apart, the fitting commands skip the file with one line.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.config import ImageLimits

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})

# Why a file was refused; each is its own counter where files are counted (edge.capture).
NOT_REGULAR = "not_regular"  # a directory, device, FIFO, socket or dangling link named like an image
TOO_LARGE = "too_large"  # more bytes than max_file_bytes
TOO_MANY_PIXELS = "too_many_pixels"  # the header's width × height is above max_pixels
UNDECODABLE = "undecodable"  # not one of our formats, a header that does not parse, or the decoder failed
EMPTY = "empty"  # 0 bytes
UNREADABLE = "unreadable"  # the file system refused (permissions, I/O error) or the file vanished
REASONS = (NOT_REGULAR, TOO_LARGE, TOO_MANY_PIXELS, UNDECODABLE, EMPTY, UNREADABLE)

_CHUNK = 1 << 20


class ImageError(ValueError):
    """An image file or folder that cannot be used; one line naming the path and the problem. ``reason`` is one
    of ``REASONS`` for a refused file ("" for a folder that cannot be used)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str  # "jpeg", "png", "bmp" or "tiff"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def list_images(directory: Path) -> list[Path]:
    """The entries of a folder named like images (by suffix), sorted by name; ImageError when there is none.
    What is named like an image but is not a regular file is listed: ``read_image`` refuses it by name."""
    if not directory.is_dir():
        raise ImageError(f"{directory}: not a directory of images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


def read_image(path: Path, limits: ImageLimits | None = None) -> np.ndarray:
    """The image at ``path`` as BGR uint8 H×W×3, within ``limits`` (the defaults of ImageLimits when None);
    ImageError (with its reason) for anything else."""
    return decode_image(read_file(path, limits), str(path), limits)


def read_file(path: Path, limits: ImageLimits | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_file_bytes``; ImageError (not_regular, too_large, empty,
    unreadable) otherwise. A device, FIFO or socket is never read, and a FIFO's open never blocks."""
    limit = (limits or ImageLimits()).max_file_bytes
    try:
        st = os.stat(path)  # follows links: the kind of what is really there
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ImageError(f"{path}: a link to nothing", NOT_REGULAR) from None
        raise ImageError(f"{path}: vanished before it could be read", UNREADABLE) from None
    except OSError as exc:
        reason = NOT_REGULAR if exc.errno == errno.ELOOP else UNREADABLE
        raise ImageError(f"{path}: cannot read: {exc.strerror}", reason) from None
    _check_kind(path, st, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc.strerror}", UNREADABLE) from None
    try:
        _check_kind(path, os.fstat(fd), limit)  # the file opened may not be the one stat saw
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}", UNREADABLE) from None
    finally:
        os.close(fd)
    if size > limit:  # it grew while we read it
        raise ImageError(f"{path}: larger than max_file_bytes {limit}", TOO_LARGE)
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)", EMPTY)
    return b"".join(chunks)


def _check_kind(path: Path, st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file ({_kind(st.st_mode)})", NOT_REGULAR)
    if st.st_size > limit:
        raise ImageError(f"{path}: {st.st_size} bytes, more than max_file_bytes {limit}", TOO_LARGE)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def decode_image(data: bytes, name: str, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode image bytes to BGR uint8 H×W×3 once the header says the image is within ``max_pixels``."""
    max_pixels = (limits or ImageLimits()).max_pixels
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", EMPTY)
    header = read_header(data, name)
    if header.pixels > max_pixels:
        raise ImageError(f"{name}: {header.format.upper()} of {header.width} × {header.height} pixels, more than "
                         f"max_pixels {max_pixels}", TOO_MANY_PIXELS)
    try:
        # IMREAD_COLOR hands back BGR uint8 whatever the file holds (grey, alpha, 16-bit)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as exc:
        raise ImageError(f"{name}: the {header.format.upper()} decoder failed: {str(exc).strip()[:200]}",
                         UNDECODABLE) from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable {header.format.upper()} ({len(data)} bytes)", UNDECODABLE)
    if image.shape[0] * image.shape[1] > max_pixels:  # a decoder that disagrees with the header: never kept
        raise ImageError(f"{name}: decoded to {image.shape[1]} × {image.shape[0]}, more than max_pixels "
                         f"{max_pixels}", TOO_MANY_PIXELS)
    return image


# ---- headers: width and height without decoding -------------------------------------------------------------

def read_header(data: bytes, name: str = "image") -> ImageHeader:
    """Format, width and height from the first bytes of a JPEG, PNG, BMP or TIFF; ImageError (undecodable) for any
    other content or a header that does not parse."""
    try:
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except (struct.error, IndexError, ValueError) as exc:
        raise ImageError(f"{name}: image header does not parse: {exc}", UNDECODABLE) from None
    raise ImageError(f"{name}: not a JPEG, PNG, BMP or TIFF ({data[:8]!r}…)", UNDECODABLE)


def _sized(fmt: str, width: int, height: int) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise ValueError(f"{fmt} header says {width} × {height}")
    return ImageHeader(fmt, width, height)


# start-of-frame markers: every SOFn but DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> ImageHeader:
    """The first start-of-frame segment, walking the segments from SOI (what libjpeg allocates from)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG segment expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        (length,) = struct.unpack_from(">H", data, i + 2)
        if length < 2:
            raise ValueError(f"JPEG segment of length {length} at byte {i}")
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return _sized("jpeg", width, height)
        i += 2 + length
    raise ValueError("no JPEG frame header")


def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR first")
    width, height = struct.unpack_from(">II", data, 16)
    return _sized("png", width, height)


def _bmp(data: bytes) -> ImageHeader:
    (dib,) = struct.unpack_from("<I", data, 14)
    if dib == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib >= 40:  # BITMAPINFOHEADER and later; a negative height is a top-down bitmap
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise ValueError(f"BMP header of {dib} bytes")
    return _sized("bmp", width, abs(height))


def _tiff(data: bytes) -> ImageHeader:
    """ImageWidth (256) and ImageLength (257) of the first directory: the page a decoder reads."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, offset)
    found: dict[int, int] = {}
    for k in range(count):
        tag, kind = struct.unpack_from(order + "HH", data, offset + 2 + 12 * k)
        if tag in (256, 257):
            fmt = {3: "H", 4: "I"}.get(kind)
            if fmt is None:
                raise ValueError(f"TIFF tag {tag} of type {kind}")
            (found[tag],) = struct.unpack_from(order + fmt, data, offset + 2 + 12 * k + 8)
    if 256 not in found or 257 not in found:
        raise ValueError("TIFF without width or height")
    return _sized("tiff", found[256], found[257])
