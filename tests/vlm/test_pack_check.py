"""`lineside pack check` / verify_pack: the starter pack passes; a flipped byte, a missing manifest key, a wrong
output name, a wrong type and drifted reference outputs each fail naming what is wrong; write_reference stores
reference outputs that the check then reproduces."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.durable import npz_bytes
from edge.vlm.check import ATOL_FP32, check_pack, verify_pack
from edge.vlm.pack import PackError, sha256_of
from edge.vlm.pack_write import write_reference

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "models" / "starter"


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    """A private copy of the starter pack to break (models/starter/ is never touched)."""
    return Path(shutil.copytree(PACK, tmp_path / "pack"))


def edit_manifest(pack: Path, change: Callable[[dict[str, Any]], object]) -> None:
    manifest = json.loads((pack / "manifest.json").read_text())
    change(manifest)
    (pack / "manifest.json").write_text(json.dumps(manifest, indent=2))


def failures(pack: Path) -> list[str]:
    return [r.line() for r in check_pack(pack) if not r.ok]


def test_starter_pack_passes_every_check() -> None:
    results = check_pack(PACK)
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]
    names = {r.name for r in results}
    assert {"manifest", "sha256 image.onnx", "sha256 text.onnx", "sha256 tokenizer.json", "onnx image.onnx",
            "onnx text.onnx", "reference embedding", "reference patches_s8", "reference patches_s16",
            "reference preprocessing", "reference tokenizer", "reference text_embedding"} <= names
    verify_pack(PACK)


def test_one_flipped_byte_in_an_onnx_file_fails_naming_the_file(pack: Path) -> None:
    data = bytearray((pack / "image.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: the file still loads, only its digest and outputs change
    (pack / "image.onnx").write_bytes(bytes(data))
    failed = failures(pack)
    assert any(line.startswith("FAIL  sha256 image.onnx: does not match") for line in failed)
    assert not any("text" in line for line in failed)
    with pytest.raises(PackError, match=r"model pack .*: sha256 image.onnx: does not match manifest") as err:
        verify_pack(pack)
    assert "\n" not in str(err.value)


def test_manifest_missing_a_key_fails(pack: Path) -> None:
    edit_manifest(pack, lambda m: m.pop("embedding_dim"))
    assert failures(pack) == ["FAIL  manifest: embedding_dim: missing"]
    with pytest.raises(PackError, match="manifest: embedding_dim: missing"):
        verify_pack(pack)


def test_manifest_with_a_wrong_type_fails(pack: Path) -> None:
    edit_manifest(pack, lambda m: m["image"].update(size=["256", 256]))
    assert failures(pack) == ["FAIL  manifest: image.size.0: Input should be a valid integer"]


def test_wrong_output_name_fails(pack: Path) -> None:
    edit_manifest(pack, lambda m: m["image"]["outputs"].update(embedding="pooled"))
    failed = failures(pack)
    assert len(failed) == 1 and failed[0].startswith("FAIL  onnx image.onnx: no output 'pooled' (model has embedding")
    with pytest.raises(PackError, match="onnx image.onnx: no output 'pooled'"):
        verify_pack(pack)


def test_wrong_shape_in_manifest_fails(pack: Path) -> None:
    edit_manifest(pack, lambda m: m.update(embedding_dim=512))
    failed = failures(pack)
    assert any("output 'embedding' is tensor(float) [N,256], expected tensor(float) [?,512]" in f for f in failed)


def test_pack_without_reference_outputs_says_so(pack: Path) -> None:
    (pack / "reference.npz").unlink()
    edit_manifest(pack, lambda m: m["files"].pop("reference.npz"))
    results = check_pack(pack)
    assert all(r.ok for r in results)
    assert results[-1].line() == "ok    reference: no reference outputs in this pack (skipped)"


def drift_reference_embedding(pack: Path) -> None:
    """The stored global embeddings moved by 10 × the FP32 tolerance (sha256 updated): the runtime no longer agrees."""
    with np.load(pack / "reference.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["embedding"] = arrays["embedding"] + 10 * ATOL_FP32
    (pack / "reference.npz").write_bytes(npz_bytes(arrays))
    edit_manifest(pack, lambda m: m["files"].update({"reference.npz": sha256_of(pack / "reference.npz")}))


def test_drifted_reference_output_fails(pack: Path) -> None:
    drift_reference_embedding(pack)
    failed = failures(pack)
    assert len(failed) == 1 and failed[0].startswith("FAIL  reference embedding: 2 images, max |Δ| 0.02")


@pytest.mark.parametrize("cpu", ["x86", "x86-vnni", "arm"])
def test_failed_reference_of_a_vnni_int8_pack_on_a_cpu_without_vnni_says_why(
        pack: Path, cpu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.vlm.cpu

    monkeypatch.setattr(edge.vlm.cpu, "cpu_target", lambda: cpu)
    drift_reference_embedding(pack)  # what saturated int8 kernels did to the outputs
    edit_manifest(pack, lambda m: m["provenance"].update(
        quantization={"method": "onnxruntime quantize_static, QDQ", "target": "x86-vnni"}))
    (failed,) = failures(pack)
    assert failed.startswith("FAIL  reference embedding: 2 images, max |Δ| 0.02")
    hint = "the pack was quantised for x86-vnni and this CPU is x86 without VNNI"
    assert (hint in failed) == (cpu == "x86"), failed
    with pytest.raises(PackError, match="reference embedding") as refused:  # what the daemon says at start
        verify_pack(pack)
    assert (hint in str(refused.value)) == (cpu == "x86")


def test_write_reference_round_trip(pack: Path) -> None:
    with np.load(PACK / "reference.npz") as z:
        images, prompts, want = z["image_uint8"], [str(p) for p in z["prompts"]], z["embedding"]
    (pack / "reference.npz").unlink()
    edit_manifest(pack, lambda m: m["files"].pop("reference.npz"))
    path = write_reference(pack, images[:, ::2, ::2], prompts[:2], atol_text=0.05)
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["files"]["reference.npz"] == sha256_of(path)
    with np.load(path) as z:
        assert z["image_uint8"].shape == (2, 128, 128, 3) and z["patches_s8"].shape == (2, 256, 32, 32)
        assert float(z["atol_text"]) == 0.05 and len(z["prompts"]) == 2
    assert all(r.ok for r in check_pack(pack))
    # byte-reproducible, so a rebuilt pack keeps its digests
    first = path.read_bytes()
    write_reference(pack, images[:, ::2, ::2], prompts[:2], atol_text=0.05)
    assert path.read_bytes() == first
    # the source model's outputs are stored only when the runtime reproduces them
    write_reference(pack, images, prompts, expected={"embedding": want})
    assert all(r.ok for r in check_pack(pack))
    with pytest.raises(PackError, match="does not reproduce the expected embedding"):
        write_reference(pack, images, prompts, expected={"embedding": -want})


def test_cli_exit_codes(pack: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["pack", "check", str(PACK)])
    assert good.exit_code == 0, good.output
    lines = good.output.strip().splitlines()
    assert all(line.startswith("ok ") for line in lines[:-1]) and lines[-1].endswith("checks passed")
    edit_manifest(pack, lambda m: m.pop("files"))
    bad = runner.invoke(app, ["pack", "check", str(pack)])
    assert bad.exit_code == 2
    assert bad.output.splitlines()[0] == "FAIL  manifest: files: missing"
    assert "Traceback" not in bad.output
    missing = runner.invoke(app, ["pack", "check", str(pack / "nope")])
    assert missing.exit_code == 2 and "is not a directory" in missing.output
