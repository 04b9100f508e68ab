"""Files that survive kill -9 and power loss: written whole or not at all, durable when the call returns; and npz
content that is the same bytes for the same arrays (packs and profiles are hashed)."""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_synced(path: Path, data: bytes) -> None:
    """Write `data` to a hidden temp file beside `path`, fsync it and rename it over `path`. The rename is durable
    only once the directory is fsynced: `write_atomic` does that; batch writers fsync each directory once."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temp file in the same directory, fsync, rename, fsync the directory."""
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
    replace_synced(path, data)
    fsync_dir(directory)


def remove_stale_temp_files(directory: Path) -> int:
    """Temp files a killed writer left behind; returns how many were removed."""
    stale = list(directory.glob(f".*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Like np.savez_compressed, but byte-reproducible (fixed timestamps, sorted members): a rebuilt pack with the
    same content has the same sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()
