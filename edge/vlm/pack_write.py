"""Finish a model pack that a tool has just written (exporter, quantiser, fp16 converter): sha256 of every file,
reference outputs (`edge.vlm.check.write_reference`), a version string derived from the content, manifest.json.

One place for it, so every pack this project writes is hashed, versioned and carries references the same way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.durable import write_atomic
from edge.vlm.pack import ModelPack, PackError, load_pack, sha256_of


@dataclass
class Reference:
    """Inputs (and optionally the source model's outputs) to store as the pack's reference outputs."""

    images_rgb: np.ndarray  # [N, H, W, 3] uint8 RGB
    prompts: Sequence[str]
    expected: Mapping[str, np.ndarray] | None = None  # e.g. torch's outputs; None = the runtime's own
    atol_image: float | None = None
    atol_text: float | None = None


def content_digest(files: Mapping[str, str]) -> str:
    """8 hex digits over the files' sha256s (the starter pack's convention: version `<date>-<digest>`)."""
    return hashlib.sha256("".join(sorted(files.values())).encode()).hexdigest()[:8]


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    write_atomic(directory / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


def finish_pack(directory: Path, manifest: dict[str, Any], files: Sequence[str], version_prefix: str,
                reference: Reference | None = None) -> ModelPack:
    """Hash `files` (names inside `directory`), store reference outputs, set `version` to
    `<version_prefix>-<digest>`, write manifest.json and return the loaded (verified) pack."""
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_of(directory / name) for name in files}
    manifest["version"] = version_prefix  # provisional: write_reference loads the pack before the digest is known
    _write_manifest(directory, manifest)
    if reference is not None:
        from edge.vlm.check import write_reference  # onnxruntime sessions; only when a pack is written

        write_reference(directory, reference.images_rgb, list(reference.prompts), expected=reference.expected,
                        atol_image=reference.atol_image, atol_text=reference.atol_text)
        manifest = json.loads((directory / "manifest.json").read_text())
    manifest["version"] = f"{version_prefix}-{content_digest(manifest['files'])}"
    _write_manifest(directory, manifest)
    return load_pack(directory)


def check_new_pack_dir(out: Path, src: Path) -> None:
    """PackError unless `out` can take a new pack made from `src`: not the source, absent or empty."""
    if Path(out).resolve() == Path(src).resolve():
        raise PackError(f"{out}: the new pack must go to another directory than its source")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"{out}: exists and is not an empty directory")


@contextmanager
def staged_directory(out: Path, src: Path) -> Iterator[Path]:
    """A temp directory beside `out`, renamed to `out` when the block succeeds: no half-written pack ever appears
    under `out`'s name."""
    out = Path(out)
    check_new_pack_dir(out, src)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; a pack is read by the daemon's user too
    try:
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
