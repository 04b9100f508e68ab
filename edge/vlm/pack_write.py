"""Finish a model pack that a tool has just written (exporter, quantiser, fp16 converter): sha256 of every file,
reference outputs (`write_reference`), a version string derived from the content, manifest.json.

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

import cv2
import numpy as np

from edge.durable import npz_bytes, write_atomic
from edge.vlm.check import REFERENCE, compare, read_manifest, tolerance
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


def write_reference(pack_dir: Path | str, images_rgb: np.ndarray, prompts: Sequence[str], *,
                    expected: Mapping[str, np.ndarray] | None = None, atol_image: float | None = None,
                    atol_text: float | None = None) -> Path:
    """Store reference inputs and outputs in a pack (`reference.npz`, format in the module docstring) and list it,
    with its sha256, in `manifest.json`'s `files`; returns its path.

    For exporters (models/export_hf.py): call it once the ONNX files, the tokenizer and a manifest naming them are
    written, and before computing anything (a version string) from the sha256s in `files`.
    `images_rgb` is [N, H, W, 3] uint8 RGB (a few real images, any one size); `prompts` a few texts. The outputs
    stored are the runtime's own (CPU) on this pack. Pass `expected` — the source model's outputs, e.g. torch's,
    keys `embedding` [N, D], `patches_s{stride}` [N, D, h, w], `text_embedding` [M, D] — to store those instead; they
    must then agree with the runtime within `atol_image` / `atol_text` (defaults as in the check), or PackError
    says by how much (this is the exporter's ONNX ≈ source test). Given tolerances are stored and used by the check.
    """
    from edge.vlm.runtime import ImageEncoder, TextEncoder

    directory = Path(pack_dir)
    manifest, results = read_manifest(directory)
    if manifest is None:
        raise PackError(f"model pack {directory}: {results[0].detail}")
    manifest["files"].pop(REFERENCE, None)  # rewritten below; its old digest must not be checked meanwhile
    pack = ModelPack(directory, manifest)
    images = np.asarray(images_rgb)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(f"images_rgb must be [N,H,W,3] uint8 RGB, got {images.dtype} {list(images.shape)}")
    if not prompts:
        raise ValueError("no prompts")
    image_encoder = ImageEncoder(pack, "cpu", quiet=True)
    text_encoder = TextEncoder(pack, "cpu", quiet=True)
    batch = np.stack([image_encoder.preprocess(cv2.cvtColor(im, cv2.COLOR_RGB2BGR)) for im in images])
    embs = image_encoder.encode_batch(batch)
    enc = text_encoder.tokenizer.encode_batch(list(prompts))
    arrays: dict[str, np.ndarray] = {
        "image_uint8": images, "image": batch, "embedding": np.stack([e.global_ for e in embs]),
        "prompts": np.array(list(prompts)), "input_ids": np.asarray([e.ids for e in enc], np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64),
        "text_embedding": text_encoder.encode(list(prompts))}
    for stride in image_encoder.strides:
        arrays[f"patches_s{stride}"] = np.stack([e.patches[stride].transpose(2, 0, 1) for e in embs])
    for key, want in (expected or {}).items():
        if key not in arrays or key in ("image_uint8", "image", "prompts", "input_ids", "attention_mask"):
            raise ValueError(f"expected output '{key}' is not one of embedding, patches_s<stride>, text_embedding")
        spec = pack.text if key == "text_embedding" else pack.image
        given = atol_text if key == "text_embedding" else atol_image
        limit = given if given is not None else tolerance({}, "", spec)
        check = compare(key, arrays[key], np.asarray(want, np.float32), limit, "expected vs runtime")
        if not check.ok:
            raise PackError(f"model pack {directory}: the runtime does not reproduce the expected {key}: "
                            f"{check.detail}")
        arrays[key] = np.asarray(want, np.float32)
    if atol_image is not None:
        arrays["atol_image"] = np.asarray(atol_image, np.float64)
    if atol_text is not None:
        arrays["atol_text"] = np.asarray(atol_text, np.float64)
    path = directory / REFERENCE
    write_atomic(path, npz_bytes(arrays))
    manifest["files"][REFERENCE] = sha256_of(path)
    write_atomic(directory / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return path
