"""ONNX Runtime sessions for a model pack: image encoder (global + multi-scale patch embeddings) and text encoder.

The provider comes from config (auto | tensorrt | cuda | cpu). Only the CPU provider exists on a plain box; the
TensorRT/CUDA options arrive with the runtime issue and plug in at `providers_for`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from edge.vlm.pack import ModelPack, PackError

log = logging.getLogger(__name__)

_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_BY_NAME = {"tensorrt": _PREFERENCE[0], "cuda": _PREFERENCE[1], "cpu": _PREFERENCE[2]}


def providers_for(provider: str, available: list[str] | None = None) -> list[str]:
    """Ordered provider list for a config value; CPU is always the last resort."""
    available = ort.get_available_providers() if available is None else available
    if provider == "auto":
        chosen = [p for p in _PREFERENCE if p in available]
    else:
        wanted = _BY_NAME[provider]
        if wanted not in available:
            raise PackError(f"provider '{provider}' is not available here (available: {', '.join(available)})")
        chosen = [wanted] + [p for p in _PREFERENCE[_PREFERENCE.index(wanted) + 1:] if p in available]
    return chosen or ["CPUExecutionProvider"]


def make_session(path: str, provider: str = "auto", intra_op_threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers_for(provider))
    except PackError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise PackError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    log.info("onnxruntime session %s runs on %s", path, session.get_providers()[0])
    return session


@dataclass(frozen=True, slots=True)
class ImageEmbedding:
    """One frame in the joint space: pooled embedding g [D] and patch grids {stride: [h, w, D]}, unit-norm."""

    global_: np.ndarray
    patches: dict[int, np.ndarray]


def _channels_last(grid: np.ndarray) -> np.ndarray:
    """[D, h, w] → contiguous [h, w, D]. OpenCV's 2-D transpose is ~10× faster than NumPy's strided copy here
    (BENCHMARKS.md, "Patch grids"); same values."""
    d, h, w = grid.shape
    flat = np.ascontiguousarray(grid, np.float32).reshape(d, h * w)
    return np.asarray(cv2.transpose(flat)).reshape(h, w, d)


class ImageEncoder:
    def __init__(self, pack: ModelPack, provider: str = "auto", intra_op_threads: int = 0) -> None:
        spec = pack.image
        self.size = (int(spec["size"][1]), int(spec["size"][0]))  # cv2 wants (w, h)
        self.rgb = spec.get("color", "RGB") == "RGB"
        mean = np.asarray(spec["mean"], np.float32) * 255.0
        std = np.asarray(spec["std"], np.float32) * 255.0
        # (x - mean) / std folded into one multiply-add per pixel
        self._scale = (1.0 / std).reshape(3, 1, 1)
        self._shift = (-mean / std).reshape(3, 1, 1)
        self.strides = [int(s) for s in spec["patch_strides"]]
        outputs = spec["outputs"]
        self._names = [outputs["embedding"]] + [outputs["patches"][str(s)] for s in self.strides]
        self.session = make_session(str(pack.path(spec["file"])), provider, intra_op_threads)
        self._input = spec["input"]

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        img = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        if self.rgb:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        chw = img.transpose(2, 0, 1).astype(np.float32)
        return chw * self._scale + self._shift

    def encode_batch(self, batch: np.ndarray) -> list[ImageEmbedding]:
        outs = self.session.run(self._names, {self._input: batch})
        result = []
        for i in range(batch.shape[0]):
            grids = zip(self.strides, outs[1:], strict=True)
            patches = {s: _channels_last(o[i]) for s, o in grids}
            result.append(ImageEmbedding(outs[0][i], patches))
        return result

    def encode(self, bgr: np.ndarray) -> ImageEmbedding:
        return self.encode_batch(self.preprocess(bgr)[None])[0]


class TextEncoder:
    def __init__(self, pack: ModelPack, provider: str = "auto", intra_op_threads: int = 0) -> None:
        spec = pack.text
        try:
            self.tokenizer = Tokenizer.from_file(str(pack.path(spec["tokenizer"])))
        except Exception as exc:
            raise PackError(f"model pack {pack.directory}: tokenizer unreadable: {exc}") from None
        self.tokenizer.enable_truncation(int(spec.get("max_length", 32)))
        self.tokenizer.enable_padding()
        self.session = make_session(str(pack.path(spec["file"])), provider, intra_op_threads)
        self._inputs = list(spec["inputs"])
        self._output = spec["output"]

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
