"""ONNX Runtime sessions for a model pack: image encoder (global + multi-scale patch embeddings) and text encoder.

The provider comes from config (`line.model.provider`: auto | tensorrt | cuda | cpu). `provider_options` turns it
and `line.model.tensorrt` into ONNX Runtime's provider list — TensorRT, CUDA behind it, CPU last — as a pure
function, so the mapping is tested without a GPU. TensorRT engines are cached under a directory keyed by the ONNX
file's sha256, the TensorRT version and the GPU name: a new pack, a TensorRT upgrade or another GPU never loads a
stale engine. `auto` takes the best provider offered and falls back quietly (one log line says which and why); an
explicit provider that is not offered, or that ONNX Runtime cannot start, refuses the pack with one line.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from edge.config import TensorrtConfig
from edge.vlm.pack import ModelPack, PackError, sha256_of

log = logging.getLogger(__name__)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
_PREFERENCE = (TRT, CUDA, CPU)
_BY_NAME = {"tensorrt": TRT, "cuda": CUDA, "cpu": CPU}

ProviderList = list[tuple[str, dict[str, str]]]


def providers_for(provider: str, available: Sequence[str] | None = None) -> list[str]:
    """Ordered provider names for a config value; CPU is always the last resort. An explicit provider that this
    ONNX Runtime does not offer raises PackError (a GPU line silently running on the CPU is a surprise)."""
    available = ort.get_available_providers() if available is None else available
    if provider == "auto":
        chosen = [p for p in _PREFERENCE if p in available]
    else:
        wanted = _BY_NAME[provider]
        if wanted not in available:
            raise PackError(f"provider '{provider}' is not available here (this onnxruntime offers "
                            f"{', '.join(available)}); install onnxruntime-gpu with TensorRT/CUDA or set "
                            "line.model.provider: auto")
        chosen = [wanted] + [p for p in _PREFERENCE[_PREFERENCE.index(wanted) + 1:] if p in available]
    return chosen or [CPU]


def sanitise(text: str) -> str:
    """A GPU name or version as one path component: 'NVIDIA GeForce RTX 4090' → 'NVIDIA-GeForce-RTX-4090'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.") or "unknown"


def precision_tag(trt: TensorrtConfig, calibration_sha: str | None = None) -> str:
    """What else makes an engine different from the same ONNX on the same GPU: precision, DLA core, the INT8 table."""
    tag = "int8" if trt.int8 else "fp32"
    if trt.fp16:
        tag = "fp16" if tag == "fp32" else "int8-fp16"
    if trt.dla_core is not None:
        tag += f"_dla{trt.dla_core}"
    if trt.int8 and calibration_sha:
        tag += f"_cal{calibration_sha[:12]}"
    return tag


def engine_cache_dir(root: Path, pack_sha: str, trt_version: str, gpu_name: str, precision: str = "fp32") -> Path:
    """ROOT/<onnx sha256>/trt<version>_<gpu>_<precision>: the engine cache of one ONNX file on one TensorRT and
    GPU. Shared with deploy/tensorrt/build_engines.py so its engines sit where the key says they belong."""
    return Path(root) / pack_sha / f"trt{sanitise(trt_version)}_{sanitise(gpu_name)}_{precision}"


def _shapes(shapes: dict[str, list[int]] | None, input_names: Sequence[str]) -> str:
    """trtexec's shape syntax for the inputs this model has (one config serves the image and the text model)."""
    keep = {k: v for k, v in (shapes or {}).items() if not input_names or k in input_names}
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in keep.items())


def provider_options(provider: str, trt: TensorrtConfig | None, available: Sequence[str], *, pack_sha: str,
                     trt_version: str | None, gpu_name: str | None, device_id: int = 0,
                     input_names: Sequence[str] = (), calibration_sha: str | None = None) -> ProviderList:
    """ONNX Runtime's `providers=` for a config: [(TensorRT, options), (CUDA, options), (CPU, {})] as far as offered.

    Pure: tests call it with any `available`. `pack_sha` is the sha256 of the ONNX file the session loads. The engine
    cache is only enabled when the TensorRT version and GPU name are known — without them the key cannot tell a
    stale engine from a good one, so engines are rebuilt at every start instead (`make_session` logs why).
    """
    trt = trt or TensorrtConfig()
    result: ProviderList = []
    for name in providers_for(provider, available):
        if name == TRT:
            opts = {"device_id": str(device_id), "trt_fp16_enable": str(trt.fp16), "trt_int8_enable": str(trt.int8)}
            if trt.int8 and trt.int8_calibration_table is not None:
                # ONNX Runtime joins the name onto the engine cache path; an absolute path replaces it
                opts["trt_int8_calibration_table_name"] = str(Path(trt.int8_calibration_table).resolve())
                opts["trt_int8_use_native_calibration_table"] = str(trt.int8_calibration_native)
            cache = trt.engine_cache and trt_version is not None and gpu_name is not None
            opts["trt_engine_cache_enable"] = str(cache)
            if cache:
                assert trt_version is not None and gpu_name is not None
                key = engine_cache_dir(trt.engine_cache_dir, pack_sha, trt_version, gpu_name,
                                       precision_tag(trt, calibration_sha))
                opts["trt_engine_cache_path"] = str(key)
            timing = trt.timing_cache and trt_version is not None and gpu_name is not None
            opts["trt_timing_cache_enable"] = str(timing)
            if timing:
                assert trt_version is not None and gpu_name is not None
                # timings depend on GPU and TensorRT only, so every pack shares them
                opts["trt_timing_cache_path"] = str(Path(trt.engine_cache_dir) / "timing"
                                                    / f"trt{sanitise(trt_version)}_{sanitise(gpu_name)}")
            if trt.max_workspace_bytes is not None:
                opts["trt_max_workspace_size"] = str(trt.max_workspace_bytes)
            lo, opt, hi = (_shapes(s, input_names) for s in (trt.profile_min_shapes, trt.profile_opt_shapes,
                                                              trt.profile_max_shapes))
            if lo and opt and hi:
                opts.update(trt_profile_min_shapes=lo, trt_profile_opt_shapes=opt, trt_profile_max_shapes=hi)
            if trt.dla_core is not None:
                opts.update(trt_dla_enable="True", trt_dla_core=str(trt.dla_core))
            result.append((TRT, opts))
        elif name == CUDA:
            result.append((CUDA, {"device_id": str(device_id)}))
        else:
            result.append((name, {}))
    return result


@functools.cache
def tensorrt_version() -> str | None:
    """major.minor.patch of the TensorRT library ONNX Runtime will load (the one an engine must match), or None."""
    for lib in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            v = int(ctypes.CDLL(lib).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        # TensorRT 10 encodes MAJOR*10000 + MINOR*100 + PATCH, TensorRT 8 MAJOR*1000 + MINOR*100 + PATCH
        major, rest = (v // 10000, v % 10000) if v >= 100000 else (v // 1000, v % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    try:
        import tensorrt
    except ImportError:
        return None
    return ".".join(str(tensorrt.__version__).split(".")[:3])


@functools.cache
def gpu_name(device_id: int = 0) -> str | None:
    """The CUDA device's name from the driver API (works on Jetson, where nvidia-smi may be missing), or None."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        dev = ctypes.c_int()
        buf = ctypes.create_string_buffer(256)
        if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(dev), device_id) \
                or cuda.cuDeviceGetName(buf, len(buf), dev):
            return None
    except (OSError, AttributeError):
        return None
    return buf.value.decode(errors="replace") or None


SPIN_WITHIN_RUN = True  # False: never spin, the setting before 2026-12-02 (`python -m edge.bench.compare spin`)


def make_session(path: str, provider: str = "auto", intra_op_threads: int = 0, *,
                 tensorrt: TensorrtConfig | None = None, device_id: int = 0, file_sha256: str | None = None,
                 input_names: Sequence[str] = (), quiet: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session for one model file; logs one line naming the provider that really runs it.

    `file_sha256` (the manifest's) saves hashing the file again for the engine cache key; `input_names` keeps the
    TensorRT profile shapes to the inputs this model has; `quiet` logs that line at DEBUG (the pack check's
    short-lived CPU sessions, which would otherwise read like the daemon's own)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the pool's threads spin-wait between the nodes of a run (~200 short nodes; waking a sleeping thread for each
    # adds up: INT8 ran 10-19 % faster, FP32 -4 to +15 %) and stop when the run returns: the daemon alternates an
    # encoder run with numpy grounding, which a pool still spinning on the cores would starve (BENCHMARKS.md,
    # "BLAS threads" and "INT8")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN_WITHIN_RUN else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    available = ort.get_available_providers()
    try:
        names = providers_for(provider, available)
    except PackError as exc:
        raise PackError(f"{path}: {exc}") from None
    note = ""
    trt_version = gpu = calib_sha = None
    if TRT in names:
        trt = tensorrt or TensorrtConfig()
        trt_version, gpu = tensorrt_version(), gpu_name(device_id)
        if trt.engine_cache and (trt_version is None or gpu is None):
            note = "; TensorRT engine cache off: TensorRT version or GPU name unknown, engines are rebuilt each start"
        if trt.int8 and trt.int8_calibration_table is not None:
            table = Path(trt.int8_calibration_table)
            if not table.is_file():
                raise PackError(f"{path}: INT8 calibration table {table} does not exist")
            calib_sha = sha256_of(table)
    pack_sha = (file_sha256 or sha256_of(Path(path))) if TRT in names else ""
    providers = provider_options(provider, tensorrt, available, pack_sha=pack_sha, trt_version=trt_version,
                                 gpu_name=gpu, device_id=device_id, input_names=input_names,
                                 calibration_sha=calib_sha)
    if "trt_engine_cache_path" in providers[0][1]:
        note = f"; TensorRT engine cache {providers[0][1]['trt_engine_cache_path']}"
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if key in providers[0][1]:
            try:
                Path(providers[0][1][key]).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PackError(f"{path}: TensorRT cache {providers[0][1][key]} is not writable: "
                                f"{exc.strerror}") from None
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise PackError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    wanted, actual = providers[0][0], session.get_providers()[0]
    if actual != wanted:
        if provider != "auto":
            raise PackError(f"{path}: provider '{provider}' is offered but ONNX Runtime could not start {wanted} "
                            f"(it fell back to {actual}; its own error is logged above); fix the CUDA/TensorRT "
                            "install or set line.model.provider: auto")
        log.warning("onnxruntime session %s runs on %s (fallback: auto chose %s, which failed to start)%s",
                    path, actual, wanted, note)
    else:
        missing = [p for p in _PREFERENCE[:_PREFERENCE.index(actual)] if p not in available] if actual in \
            _PREFERENCE else []
        why = "as asked" if provider != "auto" else "auto" + (f"; not offered here: {', '.join(missing)}"
                                                             if missing else "")
        log.log(logging.DEBUG if quiet else logging.INFO, "onnxruntime session %s runs on %s (%s)%s", path, actual,
                why, note)
    return session


@dataclass(frozen=True, slots=True)
class ImageEmbedding:
    """One frame in the joint space: pooled embedding g [D] and patch grids {stride: [h, w, D]}, unit-norm."""

    global_: np.ndarray
    patches: dict[int, np.ndarray]


@dataclass(frozen=True, eq=False)
class ImagePreprocessor:
    """The pack's preprocessing: a BGR uint8 frame of any size → normalised CHW float32 at the model's size.

    The one definition for the runtime, the pack check and the TensorRT INT8 calibrator, so calibration and
    reference outputs see exactly what the daemon feeds the model."""

    size: tuple[int, int]  # (w, h), as cv2 wants
    rgb: bool
    params: cv2.dnn.Image2BlobParams = field(repr=False)

    @classmethod
    def from_pack(cls, pack: ModelPack) -> ImagePreprocessor:
        spec = pack.image
        mean = [float(v) * 255.0 for v in spec["mean"]]
        std = [float(v) * 255.0 for v in spec["std"]]
        size = (int(spec["size"][1]), int(spec["size"][0]))
        rgb = spec.get("color", "RGB") == "RGB"
        # (x - mean) / std, the channel swap and the HWC → CHW copy in one OpenCV pass: 0.35 ms a 250 × 250 frame
        # where the same in NumPy took 1.13 ms (BENCHMARKS.md, "Preprocessing"); means and scales in the model's channel
        # order, as OpenCV takes them when it swaps
        params = cv2.dnn.Image2BlobParams(scalefactor=tuple(1.0 / v for v in std), size=size, mean=tuple(mean),
                                          swapRB=rgb, ddepth=cv2.CV_32F)
        return cls(size=size, rgb=rgb, params=params)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # the blob's own resize is bilinear: the pack's is INTER_AREA
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.dnn.blobFromImageWithParams(bgr, self.params))[0]


def channels_last(grid: np.ndarray) -> np.ndarray:
    """[D, h, w] → contiguous [h, w, D]. OpenCV's 2-D transpose is ~10× faster than NumPy's strided copy here
    (BENCHMARKS.md, "Patch grids"); same values."""
    d, h, w = grid.shape
    flat = np.ascontiguousarray(grid, np.float32).reshape(d, h * w)
    return np.asarray(cv2.transpose(flat)).reshape(h, w, d)


class ImageEncoder:
    def __init__(self, pack: ModelPack, provider: str = "auto", intra_op_threads: int = 0, *,
                 tensorrt: TensorrtConfig | None = None, device_id: int = 0, quiet: bool = False) -> None:
        spec = pack.image
        self._preprocess = ImagePreprocessor.from_pack(pack)
        self.size, self.rgb = self._preprocess.size, self._preprocess.rgb
        self.strides = sorted(int(s) for s in spec["patch_strides"])  # finest first, as the frame graph takes them
        outputs = spec["outputs"]
        self._names = [outputs["embedding"]] + [outputs["patches"][str(s)] for s in self.strides]
        self._input = spec["input"]
        self.session = make_session(str(pack.path(spec["file"])), provider, intra_op_threads, tensorrt=tensorrt,
                                    device_id=device_id, file_sha256=pack.manifest["files"].get(spec["file"]),
                                    input_names=[self._input], quiet=quiet)

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        return self._preprocess(bgr)

    @property
    def output_names(self) -> list[str]:
        """The tower's outputs as they are fed on: the global embedding, then the patch grids by stride."""
        return list(self._names)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The tower's outputs for a preprocessed [N, 3, h, w] batch, as it returns them (patch grids channels
        first): what the profile's frame graph takes in."""
        return list(self.session.run(self._names, {self._input: batch}))

    def embeddings(self, outputs: list[np.ndarray]) -> list[ImageEmbedding]:
        """Per frame, the global embedding and the patch grids channels last."""
        return [ImageEmbedding(outputs[0][i], {s: channels_last(o[i]) for s, o in
                                               zip(self.strides, outputs[1:], strict=True)})
                for i in range(outputs[0].shape[0])]

    def encode_batch(self, batch: np.ndarray) -> list[ImageEmbedding]:
        return self.embeddings(self.run(batch))

    def encode(self, bgr: np.ndarray) -> ImageEmbedding:
        return self.encode_batch(self.preprocess(bgr)[None])[0]


def tower_outputs(embeddings: list[ImageEmbedding]) -> list[np.ndarray]:
    """ImageEncoder.embeddings undone: the tower's outputs (patch grids channels first) for these frames."""
    strides = sorted(embeddings[0].patches)
    return [np.stack([e.global_ for e in embeddings])] + [
        np.stack([e.patches[s].transpose(2, 0, 1) for e in embeddings]) for s in strides]


class GraphSession:
    """An ONNX graph that runs after the image tower on its outputs, with the pack's provider (the line profile's
    frame graph): `run` takes the inputs in `input_names` order and returns {output name: array}."""

    def __init__(self, path: Path, file_sha256: str, provider: str = "auto", intra_op_threads: int = 0, *,
                 tensorrt: TensorrtConfig | None = None, device_id: int = 0, quiet: bool = False,
                 per_frame: bool = False) -> None:
        self.session = make_session(str(path), provider, intra_op_threads, tensorrt=tensorrt, device_id=device_id,
                                    file_sha256=file_sha256, quiet=quiet)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # a dynamically quantised graph scales each input tensor as a whole: run frame by frame, so that a frame's
        # result never depends on the frames batched with it
        self.per_frame = per_frame

    def run(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        if self.per_frame and inputs[0].shape[0] > 1:
            frames = [self.run([x[i:i + 1] for x in inputs]) for i in range(inputs[0].shape[0])]
            return {name: np.concatenate([f[name] for f in frames]) for name in self.output_names}
        outs = self.session.run(self.output_names, dict(zip(self.input_names, inputs, strict=True)))
        return dict(zip(self.output_names, outs, strict=True))


class TextEncoder:
    def __init__(self, pack: ModelPack, provider: str = "auto", intra_op_threads: int = 0, *,
                 tensorrt: TensorrtConfig | None = None, device_id: int = 0, quiet: bool = False) -> None:
        spec = pack.text
        try:
            self.tokenizer = Tokenizer.from_file(str(pack.path(spec["tokenizer"])))
        except Exception as exc:
            raise PackError(f"model pack {pack.directory}: tokenizer unreadable: {exc}") from None
        self.tokenizer.enable_truncation(int(spec.get("max_length", 32)))
        self.tokenizer.enable_padding()
        self._inputs = list(spec["inputs"])
        self._output = spec["output"]
        self.session = make_session(str(pack.path(spec["file"])), provider, intra_op_threads, tensorrt=tensorrt,
                                    device_id=device_id, file_sha256=pack.manifest["files"].get(spec["file"]),
                                    input_names=self._inputs, quiet=quiet)

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N, D] unit-norm embeddings."""
        if not texts:
            raise ValueError("no texts to encode")
        enc = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in enc], np.int64)
        mask = np.asarray([e.attention_mask for e in enc], np.int64)
        feeds = dict(zip(self._inputs[:2], (ids, mask), strict=True))
        if len(self._inputs) > 2:
            feeds[self._inputs[2]] = np.zeros_like(ids)
        (out,) = self.session.run([self._output], feeds)
        return np.asarray(out, np.float32)
