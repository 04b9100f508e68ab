"""Is a model pack what its manifest says, and does this runtime reproduce the outputs stored in it?

`check_pack(DIR)` runs every check and returns one result per check (`lineside pack check DIR` prints them, one line
each); `verify_pack(pack)` runs the same checks and raises PackError naming the first failure — the daemon calls it
before it uses a pack, so a tampered, truncated or mis-exported pack is refused at start-up or reload. The checks:
the manifest's schema (required keys and their types), every listed file's sha256, the ONNX files' input/output
names, element types and shapes against the manifest, and the pack's reference outputs reproduced by the runtime's
own encoders (`edge.vlm.runtime`, CPU provider: the pack is checked, not the GPU) within a tolerance.

Reference outputs live in `reference.npz` in the pack (listed in `manifest.files`, so it is hashed like the models).
Keys, all optional in pairs — an image part and a text part:

| key | what |
|---|---|
| `image_uint8` | [N, H, W, 3] uint8 **RGB** images (any size: the runtime resizes them like camera frames) |
| `image` | [N, 3, h, w] float32, those images as preprocessed for the model (checks the preprocessing) |
| `embedding` | [N, D] the image tower's global embeddings for them |
| `patches_s{stride}` | [N, D, h/stride, w/stride] its patch grids, channels first as the ONNX output (optional) |
| `prompts` | [M] str, a few texts |
| `input_ids`, `attention_mask` | [M, L] int64, their tokens (checks the tokenizer; optional) |
| `text_embedding` | [M, D] the text tower's embeddings of them |
| `atol_image`, `atol_text` | scalar max abs difference allowed (defaults below) |

The starter pack's `reference.npz` (models/build_starter.py) already has this layout. Exporters store theirs with
`edge.vlm.pack_write.write_reference`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from math import ceil
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.vlm import cpu
from edge.vlm.pack import ModelPack, PackError, sha256_of

REFERENCE = "reference.npz"
ATOL_FP32 = 2e-3  # on unit vectors; float32 kernels of different CPUs differ by ~1e-6
ATOL_INT8 = 2e-2  # dynamic-int8 towers: another CPU's integer kernels may round an activation differently
ATOL_PREPROCESS = 1e-3  # preprocessed pixels are ~[-1, 1]; one uint8 step is ~8e-3 after normalisation


class _Spec(BaseModel):
    # strict: "256" is not 256 in a manifest; extra keys (provenance, quantization, vocabularies) are allowed
    model_config = ConfigDict(extra="allow", strict=True)


class ImageOutputs(_Spec):
    embedding: str = Field(min_length=1)
    patches: dict[str, str]


class ImageSpec(_Spec):
    file: str = Field(min_length=1)
    input: str = Field(min_length=1)
    size: list[Annotated[int, Field(gt=0)]] = Field(min_length=2, max_length=2)  # [h, w]
    color: Literal["RGB", "BGR"] = "RGB"
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=3, max_length=3)
    outputs: ImageOutputs
    patch_strides: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _a_grid_per_stride(self) -> ImageSpec:
        if set(self.outputs.patches) != {str(s) for s in self.patch_strides}:
            raise ValueError(f"outputs.patches has strides {sorted(self.outputs.patches)}, patch_strides "
                             f"{self.patch_strides}")
        return self


class TextSpec(_Spec):
    file: str = Field(min_length=1)
    tokenizer: str = Field(min_length=1)
    inputs: list[str] = Field(min_length=2, max_length=3)  # ids, mask[, token types]
    output: str = Field(min_length=1)
    max_length: int = Field(32, gt=0)


class Manifest(_Spec):
    """manifest.json's schema (models/README.md describes the format)."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    embedding_dim: int = Field(gt=0)
    logit_scale: float = Field(100.0, gt=0)
    image: ImageSpec
    text: TextSpec
    files: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]

    @model_validator(mode="after")
    def _models_are_listed(self) -> Manifest:
        for needed in (self.image.file, self.text.file, self.text.tokenizer):
            if needed not in self.files:
                raise ValueError(f"files does not list {needed}")
        return self


class CheckResult(NamedTuple):
    """One check of a pack: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _schema_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        out.append(f"{where}: missing" if err["type"] == "missing" else f"{where}: {err['msg']}")
    return out


def read_manifest(directory: Path) -> tuple[dict[str, Any] | None, list[CheckResult]]:
    path = directory / "manifest.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None, [CheckResult("manifest", False, f"{path} is missing")]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [CheckResult("manifest", False, f"{path} unreadable: {exc}")]
    if not isinstance(raw, dict):
        return None, [CheckResult("manifest", False, "manifest.json is not a JSON object")]
    try:
        Manifest.model_validate(raw)
    except ValidationError as exc:
        return None, [CheckResult("manifest", False, e) for e in _schema_errors(exc)]
    return raw, [CheckResult("manifest", True, "schema (name, version, embedding_dim, image, text, files)")]


def _check_files(directory: Path, files: Mapping[str, str]) -> list[CheckResult]:
    results = []
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            results.append(CheckResult(f"sha256 {name}", False, "file is missing"))
        elif sha256_of(path) != digest:
            results.append(CheckResult(f"sha256 {name}", False, "does not match manifest.json (corrupt or tampered)"))
        else:
            results.append(CheckResult(f"sha256 {name}", True, digest[:16] + "…"))
    return results


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _shape_ok(actual: Sequence[Any], expected: Sequence[int | tuple[int, ...] | None]) -> bool:
    """Symbolic dims (str/None) match anything; None in `expected` (the batch) accepts any dim; a tuple any of."""
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if isinstance(a, int) and e is not None and a not in (e if isinstance(e, tuple) else (e,)):
            return False
    return True


def _check_io(name: str, session: Any, inputs: Mapping[str, tuple[str, list[Any]]],
              outputs: Mapping[str, list[Any]]) -> CheckResult:
    """One result for a model: every input and output the manifest names exists with the element type and shape
    the runtime feeds / reads; the model has no other inputs (the runtime would not feed them)."""
    have_in = {i.name: i for i in session.get_inputs()}
    have_out = {o.name: o for o in session.get_outputs()}
    problems = []
    for extra in sorted(set(have_in) - set(inputs)):
        problems.append(f"input '{extra}' is not in the manifest")
    for key, (elem, shape) in inputs.items():
        if key not in have_in:
            problems.append(f"no input '{key}' (model has {', '.join(have_in)})")
        elif have_in[key].type != elem or not _shape_ok(have_in[key].shape, shape):
            problems.append(f"input '{key}' is {have_in[key].type} {_fmt(have_in[key].shape)}, expected {elem} "
                            f"{_fmt(shape)}")
    for key, shape in outputs.items():
        if key not in have_out:
            problems.append(f"no output '{key}' (model has {', '.join(have_out)})")
        elif have_out[key].type != "tensor(float)" or not _shape_ok(have_out[key].shape, shape):
            problems.append(f"output '{key}' is {have_out[key].type} {_fmt(have_out[key].shape)}, expected "
                            f"tensor(float) {_fmt(shape)}")
    if problems:
        return CheckResult(f"onnx {name}", False, "; ".join(problems))
    described = ", ".join(f"{k} {_fmt(have_in[k].shape)}" for k in inputs) + " → " + \
        ", ".join(f"{k} {_fmt(have_out[k].shape)}" for k in outputs)
    return CheckResult(f"onnx {name}", True, described)


def _grid(side: int, stride: int) -> tuple[int, ...]:
    return tuple({side // stride, ceil(side / stride)})  # convolutions round up, patchifiers down


def tolerance(z: Mapping[str, np.ndarray], key: str, spec: Mapping[str, Any]) -> float:
    if key in z:
        return float(z[key])
    return ATOL_INT8 if "int8" in str(spec.get("quantization", "")).lower() else ATOL_FP32


def compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, what: str) -> CheckResult:
    if got.shape != want.shape:
        return CheckResult(name, False, f"runtime gives shape {list(got.shape)}, reference has {list(want.shape)}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if got.size else 0.0
    flat_g, flat_w = got.reshape(len(got), -1), want.reshape(len(want), -1)
    cos = float(np.min(np.sum(flat_g * flat_w, 1) / np.maximum(
        np.linalg.norm(flat_g, axis=1) * np.linalg.norm(flat_w, axis=1), 1e-12))) if got.size else 1.0
    detail = f"{what}, max |Δ| {diff:.2g} (limit {atol:.0e}), min cosine {cos:.6f}"
    return CheckResult(name, diff <= atol, detail)


def _int8_target_hint(pack: ModelPack) -> str | None:
    """Why an int8 image tower's references can fail here: quantised for VNNI, run on an x86 CPU without it."""
    provenance = pack.manifest.get("provenance")
    how = provenance.get("quantization") if isinstance(provenance, dict) else None
    target = how.get("target") if isinstance(how, dict) else None
    if target != "x86-vnni" or cpu.cpu_target() != "x86":
        return None
    return ("the pack was quantised for x86-vnni and this CPU is x86 without VNNI, whose int8 kernels saturate on "
            "full-range int8 weights: quantise the FP32 pack again on this CPU (`lineside pack quantize`, "
            "--target auto)")


def _check_reference(pack: ModelPack, image_encoder: Any, text_encoder: Any) -> list[CheckResult]:
    path = pack.directory / REFERENCE
    if not path.is_file():
        return [CheckResult("reference", True, "no reference outputs in this pack (skipped)")]
    if REFERENCE not in pack.manifest["files"]:
        return [CheckResult("reference", False, f"{REFERENCE} is not listed in manifest.files (unhashed)")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            z = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return [CheckResult("reference", False, f"{REFERENCE} unreadable: {exc}")]
    has_image, has_text = {"image_uint8", "embedding"} <= z.keys(), {"prompts", "text_embedding"} <= z.keys()
    if not has_image and not has_text:
        return [CheckResult("reference", False, f"{REFERENCE} has neither image_uint8 + embedding nor prompts + "
                            "text_embedding")]
    results: list[CheckResult] = []
    # a tower whose ONNX check failed (encoder None) already has its FAIL line; its references are not run
    if has_image and image_encoder is not None:
        images = z["image_uint8"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            return [CheckResult("reference", False, f"image_uint8 must be [N,H,W,3] uint8, is {images.dtype} "
                                f"{list(images.shape)}")]
        batch = np.stack([image_encoder.preprocess(cv2.cvtColor(im, cv2.COLOR_RGB2BGR)) for im in images])
        n = f"{len(images)} images"
        if "image" in z:
            results.append(compare("reference preprocessing", batch, z["image"], ATOL_PREPROCESS, n))
        atol = tolerance(z, "atol_image", pack.image)
        try:
            embs = image_encoder.encode_batch(batch)
        except Exception as exc:  # onnxruntime's own exception types
            return [*results, CheckResult("reference image", False, f"runtime failed: {str(exc).splitlines()[0]}")]
        image_results = [compare("reference embedding", np.stack([e.global_ for e in embs]), z["embedding"], atol,
                                  n)]
        for stride in image_encoder.strides:
            key = f"patches_s{stride}"
            if key in z:  # the runtime hands grids channels-last; the reference stores the ONNX layout
                got = np.stack([e.patches[stride].transpose(2, 0, 1) for e in embs])
                image_results.append(compare(f"reference {key}", got, z[key], atol, n))
        hint = _int8_target_hint(pack) if not all(r.ok for r in image_results) else None
        results += [r if r.ok or hint is None else CheckResult(r.name, False, f"{r.detail}; {hint}")
                    for r in image_results]
    if has_text and text_encoder is not None:
        prompts = [str(p) for p in z["prompts"]]
        n = f"{len(prompts)} prompts"
        if "input_ids" in z and "attention_mask" in z:
            enc = text_encoder.tokenizer.encode_batch(prompts)
            same = (np.array_equal(np.asarray([e.ids for e in enc]), z["input_ids"])
                    and np.array_equal(np.asarray([e.attention_mask for e in enc]), z["attention_mask"]))
            results.append(CheckResult("reference tokenizer", same, f"{n}, token ids "
                                       + ("identical" if same else "differ from the reference")))
        try:
            got = text_encoder.encode(prompts)
        except Exception as exc:  # onnxruntime's own exception types
            return [*results, CheckResult("reference text", False, f"runtime failed: {str(exc).splitlines()[0]}")]
        results.append(compare("reference text_embedding", got, z["text_embedding"],
                                tolerance(z, "atol_text", pack.text), n))
    return results


def check_pack(directory: Path | str, reference: bool = True) -> list[CheckResult]:
    """Every check of a pack, one result each; goes as far as the earlier failures allow."""
    from edge.vlm.runtime import ImageEncoder, TextEncoder  # onnxruntime; keeps `import edge.vlm.check` light

    directory = Path(directory)
    if not directory.is_dir():
        return [CheckResult("pack", False, f"{directory} is not a directory")]
    manifest, results = read_manifest(directory)
    if manifest is None:
        return results
    results += _check_files(directory, manifest["files"])
    pack = ModelPack(directory, manifest)
    image, text = pack.image, pack.text
    d = pack.embedding_dim
    h, w = (int(x) for x in image["size"])
    encoders: list[Any] = []
    for kind, spec in (("image", image), ("text", text)):
        try:
            encoder = (ImageEncoder if kind == "image" else TextEncoder)(pack, "cpu", quiet=True)
        except PackError as exc:
            results.append(CheckResult(f"onnx {spec['file']}", False, str(exc)))
            encoders.append(None)
            continue
        if kind == "image":
            outs: dict[str, list[Any]] = {image["outputs"]["embedding"]: [None, d]}
            for s in image["patch_strides"]:
                outs[image["outputs"]["patches"][str(s)]] = [None, d, _grid(h, int(s)), _grid(w, int(s))]
            io_result = _check_io(spec["file"], encoder.session, {image["input"]: ("tensor(float)",
                                                                                   [None, 3, h, w])}, outs)
        else:
            ins = {name: ("tensor(int64)", [None, None]) for name in text["inputs"]}
            io_result = _check_io(spec["file"], encoder.session, ins, {text["output"]: [None, d]})
        results.append(io_result)
        encoders.append(encoder if io_result.ok else None)
    if reference:
        results += _check_reference(pack, *encoders)
    return results


def verify_pack(pack: ModelPack | Path | str, reference: bool = True) -> None:
    """Refuse a pack that fails any check: PackError naming the pack and the first failure (a second or so on
    the starter pack: sha256s, two CPU sessions, the reference images and prompts)."""
    directory = pack.directory if isinstance(pack, ModelPack) else Path(pack)
    failed = [r for r in check_pack(directory, reference) if not r.ok]
    if failed:
        more = f" (and {len(failed) - 1} more; run `lineside pack check {directory}`)" if len(failed) > 1 else ""
        raise PackError(f"model pack {directory}: {failed[0].name}: {failed[0].detail}{more}")


