"""Error-compensating rounding of an int8 QDQ model's conv weights, used by `lineside pack quantize` (default;
`--rounding nearest` turns it off): GPTQ (Frantar et al. 2022) aimed at the float model's outputs, layer by layer.

ONNX Runtime's quantiser rounds every weight to its nearest int8 step, each on its own. Here the scales stay as
they are (so the zero points, the graph and every kernel ONNX Runtime picks stay the same: the speed does not
change) and, per layer in graph order, on the line's good images:
1. the target: float weights W* whose outputs on the inputs X̃ the int8 model really feeds the layer (quantised,
   and already off by what the layers before it lost) best match the float layer's outputs on its float inputs X
   (least squares, X̃ᵀX̃ W*ᵀ = X̃ᵀX Wᵀ);
2. GPTQ: round W* one input column at a time, moving the columns not yet rounded to cancel the output error that
   rounding made, weighted by the inputs' second moments X̃ᵀX̃;
3. the bias absorbs what is left of the mean output error (int32, at its own scale).
Layer by layer, because each layer's X̃ is taken after the layers before it were re-rounded: all layers at once
from the nearest-rounded model's inputs over-correct (each undoes errors the ones before it already undid; the
global embedding's cosine to FP32 fell to 0.54 on textile frames). Float64 sums: H and X̃ᵀX differ by little.

What it is worth on the starter pack (BENCHMARKS.md, "INT8"): 3 float layers instead of 6 (~10 % faster) with
`lineside eval` figures at least as close to FP32 as nearest rounding with 6.

A layer whose inputs give fewer than `min_rows` rows per weight of a channel keeps nearest rounding: with few rows
the moments are nearly singular and the fit is to the calibration images rather than the line (seen on the
stride-32 layers: the worst image's global cosine fell). Depthwise convs are fitted per channel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

log = logging.getLogger(__name__)
MIN_ROWS = 16  # rows of calibration input per weight of a channel below which a layer keeps nearest rounding
DAMPING = 0.01  # of H's mean diagonal, added to its diagonal: GPTQ's own default
INT8_RANGE = (-127, 127)  # ONNX Runtime's symmetric int8 weights (without reduce_range)


@dataclass(frozen=True)
class ConvWeights:
    """One quantised Conv of a QDQ graph: its node; the float tensor its input was quantised from and the
    dequantised input it reads; its int8 weight and per-channel scale initialisers; its int32 bias and scale
    initialisers if it has a bias; its attributes."""
    node: str
    float_input: str
    quantised_input: str
    weight: str
    scale: str
    bias: str | None
    bias_scale: str | None
    attributes: dict[str, Any]

    @property
    def group(self) -> int:
        return int(self.attributes.get("group", 1))


def conv_weights(model: Any) -> list[ConvWeights]:
    """Every Conv fed by DequantizeLinear(int8 weight) and DequantizeLinear(QuantizeLinear(float input))."""
    import onnx

    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        w_dq, x_dq = producer.get(node.input[1]), producer.get(node.input[0])
        if w_dq is None or x_dq is None or w_dq.op_type != "DequantizeLinear" or x_dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(x_dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        b_dq = producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = b_dq.input[:2] if b_dq is not None and b_dq.op_type == "DequantizeLinear" else (None, None)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        found.append(ConvWeights(node.name, q.input[0], node.input[0], w_dq.input[0], w_dq.input[1], bias[0],
                                 bias[1], attributes))
    return found


def patches(x: np.ndarray, attributes: dict[str, Any]) -> np.ndarray:
    """One image's conv input [C, H, W] as [C, positions, kh·kw]: what each output position's kernel reads."""
    kh, kw = attributes.get("kernel_shape", (1, 1))
    sh, sw = attributes.get("strides", (1, 1))
    if tuple(attributes.get("dilations", (1, 1))) != (1, 1):
        raise ValueError("dilated convolutions are not supported")
    if (kh, kw, sh, sw) == (1, 1, 1, 1):
        return x.reshape(x.shape[0], -1, 1)
    top, left, bottom, right = attributes.get("pads", (0, 0, 0, 0))
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    windows = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return windows.reshape(x.shape[0], -1, kh * kw)


def _rows(p: np.ndarray) -> np.ndarray:
    """[C, L, k] patches as [L, C·k] rows, in the weight's (C, kh, kw) order."""
    return p.transpose(1, 0, 2).reshape(p.shape[1], -1)


def positions(shape: Sequence[int], attributes: dict[str, Any]) -> int:
    """Output positions of a conv on one image of input shape [C, H, W]: the rows `patches` gives."""
    kh, kw = attributes.get("kernel_shape", (1, 1))
    sh, sw = attributes.get("strides", (1, 1))
    top, left, bottom, right = attributes.get("pads", (0, 0, 0, 0))
    return ((shape[-2] + top + bottom - kh) // sh + 1) * ((shape[-1] + left + right - kw) // sw + 1)


class Moments:
    """One layer's sums, image by image (float64): H = X̃ᵀX̃ and C = X̃ᵀX of the rows of its dequantised inputs X̃
    (what the int8 model feeds it) and its float inputs X (what the float model feeds it), their row sums and
    count. Depthwise layers: one of each per channel."""

    def __init__(self, layer: ConvWeights) -> None:
        self.layer = layer
        self.h: np.ndarray | float = 0.0
        self.c: np.ndarray | float = 0.0
        self.sum_float: np.ndarray | float = 0.0
        self.sum_quantised: np.ndarray | float = 0.0
        self.rows = 0

    def add(self, x: np.ndarray, xq: np.ndarray) -> None:
        """One batch of the layer's float inputs `x` and dequantised inputs `xq` [N, C, H, W]."""
        layer = self.layer
        for image, image_q in zip(x, xq, strict=True):
            # float64 throughout: W* solves H W*ᵀ = C Wᵀ, and H and C differ by little (float32 sums of
            # products made the stride-8 patches' worst cosine to FP32 fall from 0.98 to 0.85)
            p = patches(image.astype(np.float64), layer.attributes)  # [C, L, k]
            pq = patches(image_q.astype(np.float64), layer.attributes)
            if layer.group == 1:
                r, rq = _rows(p), _rows(pq)
                h, c, sf, sq = rq.T @ rq, rq.T @ r, r.sum(0), rq.sum(0)
            elif layer.group == p.shape[0]:  # depthwise
                pqt = np.ascontiguousarray(pq.transpose(0, 2, 1))
                h, c = pqt @ pq, pqt @ p
                sf, sq = p.sum(1), pq.sum(1)
            else:
                raise ValueError(f"{layer.node}: grouped convolution ({layer.group} groups) is not supported")
            self.h, self.c = self.h + h, self.c + c
            self.sum_float, self.sum_quantised = self.sum_float + sf, self.sum_quantised + sq
            self.rows += p.shape[1]


def gptq_round(weights: np.ndarray, h: np.ndarray, scale: np.ndarray, damping: float = DAMPING,
               bounds: tuple[int, int] = INT8_RANGE) -> np.ndarray:
    """Integers for `weights` [out, k] at per-row `scale` [out] that keep ‖X(W − s·Q)ᵀ‖ small for inputs X with
    XᵀX = `h` [k, k]: round column by column, spreading each column's error over the columns still to come."""
    w = weights.astype(np.float64).copy()
    h = h.astype(np.float64).copy()
    k = w.shape[1]
    dead = np.diag(h) == 0  # an input that is always zero: its weight does not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += damping * float(np.mean(np.diag(h)))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H⁻¹
    s = scale.astype(np.float64)
    q = np.empty(w.shape, np.int64)
    for i in range(k):
        q[:, i] = np.clip(np.round(w[:, i] / s), *bounds)
        err = (w[:, i] - q[:, i] * s) / u[i, i]
        w[:, i + 1:] -= np.outer(err, u[i, i + 1:])
    return q


def _damp(h: np.ndarray, damping: float) -> np.ndarray:
    h = h.astype(np.float64).copy()
    h[np.diag_indices(len(h))] += damping * float(np.mean(np.diag(h))) + 1e-12
    return h


def compensated(weights: np.ndarray, h: np.ndarray, c: np.ndarray, damping: float = 1e-6) -> np.ndarray:
    """The float weights W* [out, k] whose outputs on the int8 model's inputs X̃ best match the float layer's
    outputs on its own inputs X (least squares: X̃ᵀX̃ W*ᵀ = X̃ᵀX Wᵀ): they also undo what quantising the layers
    before did to this layer's input, as far as a linear map can."""
    return np.linalg.solve(_damp(h, damping), c @ weights.T.astype(np.float64)).T


def _session(model: Any, extra_outputs: Sequence[str]) -> Any:
    """A CPU session of `model` that can also return the float tensors `extra_outputs`."""
    import onnx
    import onnxruntime as ort

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in sorted(set(extra_outputs) - present))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def round_weights(qdq_path: Path, float_path: Path, feeds: Iterable[dict[str, np.ndarray]], out: Path,
                  min_rows: float = MIN_ROWS, damping: float = DAMPING) -> dict[str, Any]:
    """Rewrite the int8 conv weights (and int32 biases) of `qdq_path`, quantised from `float_path`, into `out`.
    Returns what was done: layers rounded, layers kept (too few rows), share of weights that changed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path))
    layers = conv_weights(model)
    source = onnx.load(str(float_path))
    float_values = {i.name: numpy_helper.to_array(i) for i in source.graph.initializer}
    feeds = list(feeds)
    float_session = _session(source, [layer.float_input for layer in layers])
    initialisers = {i.name: i for i in model.graph.initializer}
    rounded, kept, changed, total = [], [], 0, 0
    for layer in layers:
        q0 = numpy_helper.to_array(initialisers[layer.weight])
        scale = numpy_helper.to_array(initialisers[layer.scale]).astype(np.float64)
        original = layer.weight.removesuffix("_quantized")
        per_channel = int(np.prod(q0.shape[1:]))
        first = float_session.run([layer.float_input], feeds[0])[0] if feeds else None
        if first is None or original not in float_values or scale.shape != (q0.shape[0],) or \
                len(first) * len(feeds) * positions(first.shape, layer.attributes) < min_rows * per_channel:
            kept.append(layer.node)  # decided before the int8 model runs for it: too few rows is known from shapes
            continue
        # layer by layer in graph order: this layer's int8 inputs come from the layers before it as already
        # rounded, so each compensates what is left (all layers from the nearest-rounded model's inputs at once
        # over-correct: every layer undoes errors the ones before it have already undone)
        int8_model = onnx.ModelProto()
        int8_model.CopyFrom(model)
        int8_session = _session(int8_model, [layer.quantised_input])
        moments = Moments(layer)
        for i, feed in enumerate(feeds):  # (a session per layer: ~0.1 s; the runs, ~20 ms each, are most of it)
            x = first if i == 0 else float_session.run([layer.float_input], feed)[0]
            moments.add(x, int8_session.run([layer.quantised_input], feed)[0])
        w = float_values[original].reshape(q0.shape[0], -1).astype(np.float64)
        # the quantiser's own range: ±127, or ±63/64 with reduce_range (each channel's largest weight reaches it)
        limit = int(np.abs(q0.astype(np.int64)).max())
        bounds = (-limit, limit)
        h, c, rows = np.asarray(moments.h), np.asarray(moments.c), moments.rows
        if layer.group == 1:
            target = compensated(w, h, c)
            q = gptq_round(target, h, scale, damping, bounds)
        else:
            target = np.concatenate([compensated(w[i:i + 1], h[i], c[i]) for i in range(len(w))])
            q = np.concatenate([gptq_round(target[i:i + 1], h[i], scale[i:i + 1], damping, bounds)
                                for i in range(len(w))])
        if layer.bias is not None and layer.bias_scale is not None:
            # the mean output the float layer gives on its inputs, minus the int8 layer's on its: into the bias
            mean_f, mean_q = np.asarray(moments.sum_float) / rows, np.asarray(moments.sum_quantised) / rows
            dq = q * scale[:, None]
            shift = (w @ mean_f - dq @ mean_q) if layer.group == 1 else \
                (np.sum(w * mean_f, 1) - np.sum(dq * mean_q, 1))
            bias = float_values.get(layer.bias.removesuffix("_quantized"))
            bias_scale = numpy_helper.to_array(initialisers[layer.bias_scale]).astype(np.float64)
            if bias is not None:
                new_bias = np.round((bias + shift) / bias_scale)
                initialisers[layer.bias].CopyFrom(numpy_helper.from_array(
                    np.clip(new_bias, -2**31, 2**31 - 1).astype(np.int32), layer.bias))
        q = q.reshape(q0.shape).astype(q0.dtype)
        changed += int((q != q0).sum())
        total += q.size
        initialisers[layer.weight].CopyFrom(numpy_helper.from_array(q, layer.weight))
        rounded.append(layer.node)
    onnx.save(model, str(out))
    log.debug("gptq: %d layers rounded, %d kept nearest", len(rounded), len(kept))
    return {"rounding": "gptq", "gptq_layers": len(rounded), "nearest_layers": len(kept),
            "gptq_min_rows_per_weight": min_rows, "gptq_damping": damping,
            "gptq_weights_changed": round(changed / max(total, 1), 4)}
