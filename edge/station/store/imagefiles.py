"""Review images as plain JPEG files under the station's storage directory.

Why files and not BLOBs in the database: the database stays small, so SQLite checkpoints and backups stay
fast (and a PostgreSQL move does not drag gigabytes of JPEG through the DB); the console serves the images
as ordinary static files that browsers cache (an item's image never changes once written).

Layout: ``<storage_dir>/<line_id>/<frame_id>.jpg``. Each file is written atomically (temporary file, fsync,
rename, fsync of the directory) so that a crash leaves either the whole image or none, and so that it is on
disk before the database row that points at it is committed.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from edge.durable import write_atomic

__all__ = ["ImagePathError", "relative_image_path", "resolve", "write_atomic"]

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
