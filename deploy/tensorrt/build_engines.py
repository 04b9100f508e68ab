"""Build native TensorRT engines (FP32 / FP16 / INT8) of a model pack's image tower with TensorRT's Python API.

    python deploy/tensorrt/build_engines.py --pack models/starter --fp16
    python deploy/tensorrt/build_engines.py --pack models/starter --int8 --fp16 --images var/good-refs
    python deploy/tensorrt/build_engines.py --pack models/starter --fp16 --compare   # engine vs reference.npz

INT8 is calibrated (entropy calibrator) on the line's good-reference images, preprocessed by the runtime's own
`edge.vlm.runtime.ImagePreprocessor` — the exact input the daemon feeds. Engines are written under
OUT/<image.onnx sha256>/trt<version>_<gpu>_<precision>/ (the key `edge.vlm.runtime.engine_cache_dir` gives the
daemon's ONNX Runtime engine cache), with the INT8 calibration table and a build.json beside them. The calibration
table is what the daemon uses: `line.model.tensorrt.int8_calibration_table`. See README.md here for what was and
was not verified. Needs TensorRT's Python package (and cuda-python for --int8 / --compare); imports them lazily so
--help works anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class BuildError(Exception):
    """One line for the user; the script prints it and exits 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--pack", type=Path, default=REPO / "models" / "starter", help="model pack directory")
    p.add_argument("--out", type=Path, default=Path("var/trt-engines"), help="engines go under this folder")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    p.add_argument("--int8", action="store_true", help="allow INT8 kernels, calibrated on --images")
    p.add_argument("--images", type=Path, help="folder of the line's good-reference images (INT8 calibration)")
    p.add_argument("--calib-images", type=int, default=500, help="use at most this many images for calibration")
    p.add_argument("--calib-batch", type=int, default=8, help="calibration batch size")
    p.add_argument("--min-batch", type=int, default=1, help="optimisation profile: smallest batch")
    p.add_argument("--opt-batch", type=int, default=1, help="optimisation profile: batch to tune for")
    p.add_argument("--max-batch", type=int, default=4, help="optimisation profile: largest batch (cameras per box)")
    p.add_argument("--workspace-mib", type=int, default=0, help="builder workspace limit; 0 = TensorRT's default")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (GPU fallback on); default: GPU")
    p.add_argument("--device", type=int, default=0, help="CUDA device")
    p.add_argument("--compare", action="store_true", help="run the pack's reference images through the engine "
                   "and compare with its reference embeddings")
    args = p.parse_args(argv)
    if args.int8 and args.images is None:
        p.error("--int8 needs --images (a folder of good-reference images of the line)")
    if not 1 <= args.min_batch <= args.opt_batch <= args.max_batch:
        p.error("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    return args


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BuildError("the tensorrt Python package is not installed (JetPack: apt install python3-libnvinfer; "
                         "x86-64: pip install tensorrt); nothing was built") from None
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BuildError("cuda-python is needed for INT8 calibration and --compare (pip install cuda-python)") \
                from None
    return cudart


def _cuda(result: tuple[Any, ...]) -> Any:
    """cuda-python returns (error, value…); raise on an error, return the value(s)."""
    err, *rest = result
    if int(err) != 0:
        raise BuildError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest or None


def good_images(folder: Path, limit: int) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise BuildError(f"no images in {folder}")
    return paths


def calibration_batches(paths: list[Path], preprocess: Any, batch: int) -> Iterator[Any]:
    """Full batches of preprocessed good references (a short last batch is dropped: the profile is fixed)."""
    import cv2
    import numpy as np

    chunk: list[Any] = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BuildError(f"cannot read image {path}")
        chunk.append(preprocess(bgr))
        if len(chunk) == batch:
            yield np.ascontiguousarray(np.stack(chunk), np.float32)
            chunk = []


def make_calibrator(trt: Any, cudart: Any, batches: Iterator[Any], nbytes: int, batch: int, cache: Path) -> Any:
    """An entropy calibrator feeding `batches` through one device buffer; TensorRT writes its table to `cache`."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT's bindings need the explicit base call
            self.device = _cuda(cudart.cudaMalloc(nbytes))
            self.seen = 0

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            x = next(batches, None)
            if x is None:
                return None
            _cuda(cudart.cudaMemcpy(self.device, x.ctypes.data, x.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            self.seen += len(x)
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate afresh: the images may have changed; the table is written below

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()


def build_engine(trt: Any, onnx_path: Path, args: argparse.Namespace, input_name: str, chw: tuple[int, int, int],
                 timing_path: Path, calibrator: Any | None) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0) if parser.num_errors else "unknown error"
        raise BuildError(f"TensorRT cannot parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    if args.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_mib << 20)
    if args.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (args.min_batch, *chw), (args.opt_batch, *chw), (args.max_batch, *chw))
    config.add_optimization_profile(profile)
    if calibrator is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        calib = builder.create_optimization_profile()  # calibration batches have one fixed shape
        shape = (args.calib_batch, *chw)
        calib.set_shape(input_name, shape, shape, shape)
        config.set_calibration_profile(calib)
    if args.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = args.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def compare_with_reference(trt: Any, cudart: Any, engine_bytes: bytes, pack: Any, preprocess: Any,
                           max_batch: int) -> str:
    """Run the pack's reference images through the engine (TensorRT >= 8.5 tensor API); one summary line."""
    import cv2
    import numpy as np

    ref_path = pack.directory / "reference.npz"
    if not ref_path.is_file():
        return "no reference.npz in this pack: nothing to compare"
    with np.load(ref_path, allow_pickle=False) as z:
        images, want = z["image_uint8"][:max_batch], z["embedding"][:max_batch]
    x = np.ascontiguousarray(np.stack([preprocess(cv2.cvtColor(im, cv2.COLOR_RGB2BGR)) for im in images]),
                             np.float32)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    spec = pack.image
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    context.set_input_shape(spec["input"], x.shape)
    buffers, outputs = {}, {}
    for name in names:
        shape = tuple(context.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        host = x if name == spec["input"] else np.empty(shape, dtype)
        buffers[name] = _cuda(cudart.cudaMalloc(host.nbytes))
        context.set_tensor_address(name, int(buffers[name]))
        if name != spec["input"]:
            outputs[name] = host
    stream = _cuda(cudart.cudaStreamCreate())
    _cuda(cudart.cudaMemcpy(buffers[spec["input"]], x.ctypes.data, x.nbytes,
                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
    if not context.execute_async_v3(stream):
        raise BuildError("TensorRT execution failed")
    _cuda(cudart.cudaStreamSynchronize(stream))
    for name, host in outputs.items():
        _cuda(cudart.cudaMemcpy(host.ctypes.data, buffers[name], host.nbytes,
                                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
    for ptr in buffers.values():
        _cuda(cudart.cudaFree(ptr))
    got = outputs[spec["outputs"]["embedding"]].astype(np.float32)
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12)
    return (f"engine vs reference embedding on {len(x)} images: max |Δ| {np.abs(got - want).max():.2g}, "
            f"min cosine {cos.min():.5f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO))
    from edge.config import TensorrtConfig
    from edge.vlm.pack import PackError, load_pack, sha256_of
    from edge.vlm.runtime import ImagePreprocessor, engine_cache_dir, gpu_name, precision_tag

    try:
        pack = load_pack(args.pack)
        trt = import_tensorrt()
        cudart = import_cudart() if args.int8 or args.compare else None
        gpu = gpu_name(args.device)
        if gpu is None:
            raise BuildError(f"no CUDA device {args.device} (libcuda.so.1 not found or the driver reports none)")
        version = ".".join(trt.__version__.split(".")[:3])
        spec = pack.image
        onnx_path = pack.path(spec["file"])
        h, w = (int(v) for v in spec["size"])
        preprocess = ImagePreprocessor.from_pack(pack)
        key = TensorrtConfig(fp16=args.fp16, int8=args.int8, dla_core=args.dla_core)
        out = engine_cache_dir(args.out, pack.manifest["files"][spec["file"]], version, gpu, precision_tag(key))
        out.mkdir(parents=True, exist_ok=True)
        calibrator, table, images = None, out / "image.calibration.cache", []
        if args.int8:
            images = good_images(args.images, args.calib_images)
            if len(images) < args.calib_batch:
                raise BuildError(f"{len(images)} images in {args.images}, fewer than one --calib-batch "
                                 f"({args.calib_batch})")
            batches = calibration_batches(images, preprocess, args.calib_batch)
            nbytes = args.calib_batch * 3 * h * w * 4
            calibrator = make_calibrator(trt, cudart, batches, nbytes, args.calib_batch, table)
        started = time.monotonic()
        engine = build_engine(trt, onnx_path, args, spec["input"], (3, h, w),
                              args.out / "timing" / f"trt{version}_{gpu}.cache", calibrator)
        (out / "image.engine").write_bytes(engine)
        meta = {"pack": pack.version, "onnx": spec["file"], "onnx_sha256": sha256_of(onnx_path),
                "tensorrt": trt.__version__, "gpu": gpu, "fp16": args.fp16, "int8": args.int8,
                "dla_core": args.dla_core, "batch": [args.min_batch, args.opt_batch, args.max_batch],
                "input": [3, h, w], "calibration_images": len(images),
                "calibration_table": table.name if args.int8 else None,
                "build_seconds": round(time.monotonic() - started, 1)}
        (out / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"built {out / 'image.engine'} ({len(engine) / 2**20:.1f} MiB, {meta['build_seconds']} s)")
        if args.int8:
            print(f"INT8 calibration table {table} from {len(images)} images; for the daemon set "
                  f"line.model.tensorrt.int8: true and int8_calibration_table: {table}")
        if args.compare:
            print(compare_with_reference(trt, cudart, engine, pack, preprocess, args.max_batch))
    except (BuildError, PackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
