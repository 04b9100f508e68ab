"""Model packs: generic encoders as ONNX + tokenizer + manifest.json (see models/README.md for the format)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PackError(RuntimeError):
    """A model pack that cannot be used; the message is one line naming the pack and the problem."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelPack:
    directory: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def logit_scale(self) -> float:
        return float(self.manifest.get("logit_scale", 100.0))

    @property
    def image(self) -> dict[str, Any]:
        return dict(self.manifest["image"])

    @property
    def text(self) -> dict[str, Any]:
        return dict(self.manifest["text"])

    def path(self, file_name: str) -> Path:
        return self.directory / file_name


_REQUIRED = ("name", "version", "embedding_dim", "image", "text", "files")


def load_pack(directory: Path | str, verify: bool = True) -> ModelPack:
    """Read a pack's manifest and (by default) check every file's sha256; raise PackError on any problem."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not directory.is_dir():
        raise PackError(f"model pack {directory}: directory does not exist")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise PackError(f"model pack {directory}: manifest.json is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PackError(f"model pack {directory}: manifest.json unreadable: {exc}") from None
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise PackError(f"model pack {directory}: manifest.json lacks {', '.join(missing)}")
    files: dict[str, str] = manifest["files"]
    for needed in (manifest["image"].get("file"), manifest["text"].get("file"), manifest["text"].get("tokenizer")):
        if needed not in files:
            raise PackError(f"model pack {directory}: manifest.files does not list {needed}")
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise PackError(f"model pack {directory}: missing model file {name}")
        if verify and sha256_of(path) != digest:
            raise PackError(f"model pack {directory}: {name} does not match its sha256 in manifest.json "
                            "(corrupt or tampered file)")
    return ModelPack(directory, manifest)
