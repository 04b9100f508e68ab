"""`lineside pack quantize` and `lineside pack fp16`: a new, complete model pack from an existing one.

INT8 (CPU): ONNX Runtime static quantisation of the image tower in QDQ format — per-channel int8 weights, uint8
activations whose ranges are calibrated (min/max) on the line's good-reference images, preprocessed by the runtime's
own `ImagePreprocessor` so calibration sees exactly what the daemon feeds. The first few weight layers and the L2
normalisation at the end of each output stay float (`kept_float` says why and what it is worth). The int8 conv
weights are then re-rounded layer by layer to undo, on the good images, what quantising cost the layer's output
(`edge.vlm.gptq`: same scales, same graph, same speed; `--rounding nearest` skips it). The text tower is
copied as it is: it runs once per prompt bank, not per frame, and the starter's is already dynamic int8. A share of
the good images (every 5th) is held out of calibration and used to report the accuracy change against FP32 (cosine of
the global and patch embeddings); `--eval` adds the image AUROC change on the textile calib split (slow;
edge.eval.quantized).

Activation/weight types follow ONNX Runtime's CPU guidance (`--target`): x86 with VNNI → uint8/int8; x86 without
VNNI → the same with 7-bit weights (`reduce_range`, avoids int16 saturation in the AVX2 kernels); ARM → int8/int8.

FP16 (GPUs): `onnxruntime.transformers.float16` converts the float towers to float16 inside, float32 at the inputs
and outputs so the runtime feeds and reads them unchanged; an already-quantised text tower is copied as it is.

Every new pack gets a new version (`<source version>-int8-<digest>`), its own sha256s, reference outputs
(`edge.vlm.pack_write.write_reference`) and its provenance in the manifest; it loads with `load_pack`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from edge.images import read_image
from edge.progress import Progress, silent
from edge.vlm.check import REFERENCE
from edge.vlm.cpu import cpu_target
from edge.vlm.pack import ModelPack, PackError, load_pack
from edge.vlm.pack_write import Reference, finish_pack, staged_directory
from edge.vlm.runtime import ImageEncoder, ImagePreprocessor

log = logging.getLogger(__name__)
Target = Literal["auto", "x86-vnni", "x86", "arm"]
Rounding = Literal["nearest", "gptq"]
STATIC_INT8 = "static-int8-qdq"
HOLDOUT_EVERY = 5  # every 5th good image (sorted by name) is held out of calibration to measure the change
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
FLOAT_LAYERS = 3  # see kept_float
ROUNDING: Rounding = "gptq"  # see edge/vlm/gptq.py
GPTQ_IMAGES = 32  # calibration images GPTQ's input moments come from (~4 s each for the starter pack, 2 cores)
# ops of the L2 normalisation `x / max(||x||, eps)` that each output ends with (torch's F.normalize export), and of
# the starter pack's embeddings, which are unit parts scaled and concatenated (models/build_starter.joint_embedding)
_NORMALISATION_OPS = frozenset({"Div", "Expand", "Clip", "Max", "ReduceL2", "Shape", "Sqrt", "ReduceSumSquare",
                                "Pow", "ReduceSum", "Unsqueeze", "Constant", "Mul", "Concat"})



@dataclass(frozen=True)
class QuantizeResult:
    pack: ModelPack
    calibration_images: int
    heldout_images: int
    accuracy: dict[str, float]
    seconds: float

    def summary(self) -> str:
        acc = self.accuracy
        parts = [f"{k} {v:.4f}" for k, v in acc.items()]
        return (f"pack {self.pack.version} written to {self.pack.directory} ({self.calibration_images} calibration "
                f"images, {self.seconds:.1f} s); int8 vs fp32 on {self.heldout_images} held-out images: "
                + ", ".join(parts))


class _FrameReader:
    """ONNX Runtime's CalibrationDataReader protocol: one preprocessed image per call, read lazily from disk."""

    def __init__(self, preprocess: ImagePreprocessor, files: Sequence[Path], input_name: str) -> None:
        self._files = iter(files)
        self._preprocess = preprocess
        self._input = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._files, None)
        if path is None:
            return None
        return {self._input: self._preprocess(read_image(path))[None]}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (feed := self.get_next()) is not None:
            yield feed


def kept_float(model: Any, float_layers: int = FLOAT_LAYERS) -> list[str]:
    """Names of the nodes the quantiser leaves float: the first `float_layers` weight layers (Conv, MatMul, Gemm in
    graph order) and every node before them, and the L2 normalisation that ends each output (walking back from
    each output through normalisation ops only: a quantised unit vector is no longer one).

    Why the first layers: they run at the highest resolution on few channels, where 8-bit activations lose the
    most. With nearest rounding the starter pack wanted 6 (stem + two MBConv blocks, the end of a stage): 3 ran
    ~10 % faster but lost up to 2.9 accuracy points (ELPV unseen line). GPTQ rounding (`edge.vlm.gptq`) gives that
    back: 3 float layers + GPTQ is at least as close to FP32 as 6 + nearest (`lineside eval --pack`, textile seeds
    0–2 and ELPV, each quantised on its own good images; BENCHMARKS.md, "INT8"), at 1.7–1.9× FP32 frames/s.
    Fewer: 1 float layer + GPTQ came as close to FP32 on textile frames and a little less close on ELPV cells
    (worst stride-16 patch cosine 0.960 against 0.968), for two small layers' worth of time; not taken. More is
    not better once the float part ends inside a residual stage (9: slower than 6). Another model may want
    another number: `--float-layers`."""
    graph = model.graph
    weights = [i for i, node in enumerate(graph.node) if node.op_type in _WEIGHT_OPS]
    n = min(float_layers, len(weights))
    keep = {node.name for node in graph.node[:weights[n - 1] + 1]} if n > 0 else set()
    producer = {out: node for node in graph.node for out in node.output}
    stack = [producer[o.name] for o in graph.output if o.name in producer]
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if node.name in seen or node.op_type not in _NORMALISATION_OPS:
            continue
        seen.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    return sorted(keep | seen)


def quantize_image_model(src: Path, dst: Path, preprocess: ImagePreprocessor, input_name: str,
                         files: Sequence[Path], target: Target = "auto",
                         float_layers: int = FLOAT_LAYERS, rounding: Rounding = ROUNDING) -> dict[str, Any]:
    """Static QDQ int8 of one image-tower ONNX file, calibrated on `files`; returns what was done (provenance)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_FrameReader, CalibrationDataReader):
        pass

    chosen = cpu_target() if target == "auto" else target
    activation = QuantType.QInt8 if chosen == "arm" else QuantType.QUInt8
    with tempfile.TemporaryDirectory(prefix="lineside-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + constant folding first: ONNX Runtime's recommended pre-processing for quantisation
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        excluded = kept_float(onnx.load(str(prepared), load_external_data=False), float_layers)
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))  # the quantiser logs a line per rescaled bias on the root logger
        try:
            quantize_static(
                str(prepared), str(dst), Reader(preprocess, files, input_name), quant_format=QuantFormat.QDQ,
                per_channel=True, reduce_range=chosen == "x86", activation_type=activation,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
                # bounded memory: the calibrator merges ranges every 16 images instead of keeping every activation
                extra_options={"CalibMaxIntermediateOutputs": 16})
        finally:
            root.setLevel(level)
        rounded = {"rounding": "nearest"}
        if rounding == "gptq":
            from edge.vlm.gptq import round_weights

            rounded = round_weights(dst, prepared, _FrameReader(preprocess, files[:GPTQ_IMAGES], input_name), dst)
    return {"method": "onnxruntime quantize_static, QDQ, min/max calibration", "target": chosen,
            "activations": "int8" if chosen == "arm" else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel" + (" (7-bit, reduce_range)" if chosen == "x86" else ""),
            "float_layers": float_layers, "kept_float_nodes": len(excluded), **rounded,
            "onnxruntime": _ort_version()}


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def compare_encoders(reference: ImageEncoder, other: ImageEncoder, files: Sequence[Path],
                     progress: Progress = silent) -> dict[str, float]:
    """Cosine similarity of `other`'s embeddings to `reference`'s on the same frames: global (min, mean) and, per
    stride, every patch's (min, mean)."""
    glob: list[float] = []
    patches: dict[int, list[np.ndarray]] = {s: [] for s in reference.strides}
    for path in progress(list(files), "int8 vs fp32"):
        x = reference.preprocess(read_image(path))[None]
        (a,), (b,) = reference.encode_batch(x), other.encode_batch(x)
        glob.append(float(np.dot(a.global_, b.global_)))
        for s in reference.strides:
            patches[s].append(np.sum(a.patches[s] * b.patches[s], axis=-1).ravel())
    out = {"global_cosine_min": min(glob), "global_cosine_mean": float(np.mean(glob))}
    for s, values in patches.items():
        cat = np.concatenate(values)
        out[f"patch_s{s}_cosine_min"] = float(cat.min())
        out[f"patch_s{s}_cosine_mean"] = float(cat.mean())
    return {k: round(v, 5) for k, v in out.items()}


def split_holdout(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out): every HOLDOUT_EVERY-th file held out; with fewer than HOLDOUT_EVERY files all of
    them calibrate and the comparison reuses them (said in the manifest)."""
    files = sorted(files)
    if len(files) < HOLDOUT_EVERY:
        return files, files
    held = files[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]
    return [f for f in files if f not in held], held


def _reference_inputs(src: ModelPack, fallback: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """The source pack's reference images and prompts (so `pack check` of both packs uses the same inputs), else
    two of the given frames at the model's size and a few generic prompts."""
    path = src.directory / REFERENCE
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if "image_uint8" in z.files and "prompts" in z.files:
                return np.asarray(z["image_uint8"]), [str(p) for p in z["prompts"]]
    h, w = (int(v) for v in src.image["size"])
    images = [cv2.cvtColor(cv2.resize(read_image(p), (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
              for p in list(fallback)[:2]]
    return np.stack(images), ["a photo of a flawless part.", "a photo of a scratched part."]


def _copy_other_files(src: ModelPack, staging: Path, replaced: set[str]) -> list[str]:
    """Copy every file the source manifest lists except the replaced ones and its reference outputs (rewritten)."""
    names = []
    for name in src.manifest["files"]:
        if name in replaced or name == REFERENCE:
            continue
        shutil.copy2(src.path(name), staging / name)
        names.append(name)
    return names


def quantize_pack(pack_dir: Path, good: Sequence[Path], out: Path, *, target: Target = "auto",
                  max_calibration: int = 200, float_layers: int = FLOAT_LAYERS, rounding: Rounding = ROUNDING,
                  provider: str = "cpu", progress: Progress = silent) -> QuantizeResult:
    """A new pack in `out` with a static-int8 image tower calibrated on `good` (a held-out share excluded)."""
    started = time.monotonic()
    src = load_pack(pack_dir)
    if src.image.get("quantization"):
        raise PackError(f"model pack {src.directory}: the image tower is already quantised "
                        f"({src.image['quantization']}); quantise the FP32 pack")
    calib, heldout = split_holdout(good)
    calib = calib[:max_calibration]
    if not calib:
        raise PackError("quantisation needs at least one good image")
    image_file = src.image["file"]
    fp32 = ImageEncoder(src, provider, quiet=True)
    with staged_directory(out, src.directory) as staging:
        log.debug("quantising %s on %d good images", src.path(image_file), len(calib))
        how = quantize_image_model(src.path(image_file), staging / image_file, ImagePreprocessor.from_pack(src),
                                   src.image["input"], calib, target, float_layers, rounding)
        names = [image_file, *_copy_other_files(src, staging, {image_file})]
        manifest = json.loads(json.dumps(src.manifest))  # deep copy
        manifest["image"]["quantization"] = STATIC_INT8
        draft = ModelPack(staging, {**manifest, "files": {n: "" for n in names}})
        accuracy = compare_encoders(fp32, ImageEncoder(draft, provider, quiet=True), heldout, progress)
        how.update(calibration_images=len(calib), heldout_images=len(heldout), source_pack=src.version,
                   heldout_is_calibration=heldout == calib, accuracy_vs_fp32=accuracy)
        manifest.setdefault("provenance", {})["quantization"] = how
        images, prompts = _reference_inputs(src, heldout)
        finish_pack(staging, manifest, names, f"{src.manifest['version']}-int8", Reference(images, prompts))
    pack = load_pack(out)
    return QuantizeResult(pack, len(calib), len(heldout), accuracy, round(time.monotonic() - started, 1))


def fp16_pack(pack_dir: Path, out: Path) -> ModelPack:
    """A new pack in `out` whose float towers are float16 inside (float32 inputs/outputs), for GPUs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = load_pack(pack_dir)
    if src.image.get("quantization"):
        raise PackError(f"model pack {src.directory}: the image tower is quantised ({src.image['quantization']}); "
                        "convert the FP32 pack")
    manifest = json.loads(json.dumps(src.manifest))
    converted = {}
    for kind in ("image", "text"):
        spec = manifest[kind]
        if spec.get("quantization"):
            continue  # an int8 tower has no float weights worth halving, and its integer ops stay as they are
        converted[kind] = spec["file"]
        spec["quantization"] = "fp16"
    with staged_directory(out, src.directory) as staging:
        for name in converted.values():
            model = convert_float_to_float16(onnx.load(str(src.path(name))), keep_io_types=True)
            onnx.save(model, str(staging / name))
        names = [*converted.values(), *_copy_other_files(src, staging, set(converted.values()))]
        manifest.setdefault("provenance", {})["fp16"] = {
            "method": "onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types",
            "towers": sorted(converted), "source_pack": src.version, "onnxruntime": _ort_version()}
        images, prompts = _reference_inputs(src, [])
        # float16 keeps ~3 significant digits: unit-vector components move by up to ~1e-3
        finish_pack(staging, manifest, names, f"{src.manifest['version']}-fp16",
                    Reference(images, prompts, atol_image=1e-2, atol_text=1e-2))
    return load_pack(out)
