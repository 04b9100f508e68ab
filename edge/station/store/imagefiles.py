"""Review images as plain JPEG files under the station's storage directory.

Why files and not BLOBs in the database: the database stays small, so SQLite checkpoints and backups stay
fast (and a PostgreSQL move does not drag gigabytes of JPEG through the DB); the console serves the images
as ordinary static files that browsers cache (an item's image never changes once written).

Layout: ``<storage_dir>/<line_id>/<frame_id>.jpg``. Each file is written atomically (temporary file, fsync,
rename, fsync of the directory) so that a crash leaves either the whole image or none, and so that it is on
disk before the database row that points at it is committed.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

from edge.durable import write_atomic
from edge.transport.schema import MAX_JPEG_BYTES

__all__ = ["ImagePathError", "relative_image_path", "resolve", "resolver", "servable", "write_atomic"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class ImagePathError(ValueError):
    """A stored relative image path that would leave the storage directory."""


def _safe_component(name: str) -> str:
    """A single path component for ``name``: itself when harmless, else a sanitised name plus a checksum.

    ``frame_id`` is restricted by the wire schema, ``line_id`` is not (yet), so neither may be trusted to stay
    inside the storage directory: ``..`` or ``a/b`` must never become a path.
    """
    if _SAFE_NAME.match(name) and name not in (".", ".."):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "_"
    return f"{cleaned[:80]}-{zlib.crc32(name.encode()):08x}"


def relative_image_path(line_id: str, frame_id: str) -> str:
    """Where an item's image lives, relative to storage_dir (forward slashes, stored in the DB)."""
    return f"{_safe_component(line_id)}/{_safe_component(frame_id)}.jpg"


def resolve(storage_dir: Path, relative: str) -> Path:
    """Absolute path of a stored relative image path; refuse anything that escapes storage_dir."""
    root = storage_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ImagePathError(f"image path {relative!r} leaves the storage directory {root}")
    return path


def resolver(storage_dir: Path) -> Callable[[str], Path]:
    """``resolve`` for the paths of one batch: each line directory is resolved (and checked) once (``Path.resolve``
    stats every component: ~30 µs an item), and only the file name is joined per path. A
    symbolic link at the file name itself is not followed: ``write_atomic`` renames over it, it writes nothing
    through it. For writing, not for serving a file."""
    directories: dict[str, Path] = {}

    def one(relative: str) -> Path:
        head, _, name = relative.rpartition("/")
        if name in ("", ".", ".."):
            return resolve(storage_dir, relative)
        if head not in directories:
            directories[head] = resolve(storage_dir, head)  # refuses a directory that leaves storage_dir
        return directories[head] / name

    return one


def servable(path: Path) -> Path:
    """``path`` when the console may send it: a regular file (after links) no larger than the wire lets an image
    be, or missing (the caller says so); ImagePathError for anything else — a device or FIFO put in its place
    would stream for ever, a huge file would be no review image."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise ImagePathError(f"image file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImagePathError(f"image file {path} is not a regular file")
    if st.st_size > MAX_JPEG_BYTES:
        raise ImagePathError(f"image file {path} has {st.st_size} bytes, more than {MAX_JPEG_BYTES}")
    return path
