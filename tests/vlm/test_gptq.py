"""edge/vlm/gptq.py: error-compensating rounding keeps a layer's output closer to float than nearest rounding at the
same scales, and its patches are what ONNX Runtime's Conv reads. The whole pass on the starter pack (same graph and
scales as nearest rounding, other int8 weights and int32 biases, closer to FP32) is tested with the pack in
tests/vlm/test_quantize.py, which quantises it once for all its tests."""

from __future__ import annotations

import numpy as np
import pytest

from edge.vlm.gptq import INT8_RANGE, gptq_round, patches, positions

onnx = pytest.importorskip("onnx")


def _correlated_inputs(rng: np.random.Generator, rows: int, k: int, mix: np.ndarray | None = None) -> np.ndarray:
    """Rows like a conv layer's inputs: channels correlated, of unequal spread (`mix`: the same distribution)."""
    mix = rng.standard_normal((k, k)) * rng.uniform(0.1, 2.0, k) if mix is None else mix
    return rng.standard_normal((rows, k)) @ mix


def test_gptq_round_keeps_layer_output_closer_than_nearest():
    rng = np.random.default_rng(0)
    k, out = 48, 32
    w = rng.standard_normal((out, k)) * rng.uniform(0.05, 1.0, (out, 1))
    scale = np.abs(w).max(1) / INT8_RANGE[1]
    # the error that matters is on inputs GPTQ did not see: other draws from the same distribution
    mix = rng.standard_normal((k, k)) * rng.uniform(0.1, 2.0, k)
    x_fit, x_new = _correlated_inputs(rng, 4000, k, mix), _correlated_inputs(rng, 4000, k, mix)

    nearest = np.clip(np.round(w / scale[:, None]), *INT8_RANGE)
    q = gptq_round(w, x_fit.T @ x_fit, scale)
    assert q.dtype.kind == "i" and q.min() >= INT8_RANGE[0] and q.max() <= INT8_RANGE[1]

    def error(levels: np.ndarray) -> float:
        return float(np.linalg.norm(x_new @ (w - levels * scale[:, None]).T))

    assert error(q) < 0.8 * error(nearest), (error(q), error(nearest))
    assert np.abs(q - nearest).mean() < 1  # same scales: mostly a step away at most, not another quantisation


def test_gptq_round_ignores_dead_inputs():
    rng = np.random.default_rng(2)
    x = _correlated_inputs(rng, 500, 8)
    x[:, 3] = 0.0  # a channel that is always zero after a ReLU
    w = rng.standard_normal((4, 8))
    scale = np.abs(w).max(1) / 127
    q = gptq_round(w, x.T @ x, scale)
    assert np.all(q[:, 3] == 0) and np.isfinite(q).all()


@pytest.mark.parametrize(("kernel", "stride", "pads", "group"), [
    (3, 2, (1, 1, 1, 1), 1), (3, 1, (1, 1, 1, 1), 6), (5, 2, (2, 2, 2, 2), 6), (1, 1, (0, 0, 0, 0), 1)])
def test_patches_are_what_the_conv_reads(kernel, stride, pads, group):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    c, out_c = 6, 6 if group > 1 else 5
    x = rng.standard_normal((1, c, 11, 13)).astype(np.float32)
    w = rng.standard_normal((out_c, c // group, kernel, kernel)).astype(np.float32)
    attributes = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": list(pads), "group": group}
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    p = patches(x[0].astype(np.float64), attributes)  # [C, L, k]
    assert positions(x[0].shape, attributes) == p.shape[1] == y.shape[2] * y.shape[3]
    if group == 1:
        got = p.transpose(1, 0, 2).reshape(p.shape[1], -1) @ w.reshape(out_c, -1).T.astype(np.float64)
    else:
        got = np.einsum("clk,ck->lc", p, w.reshape(c, -1).astype(np.float64))
    np.testing.assert_allclose(got.T.reshape(y.shape), y, rtol=1e-4, atol=1e-4)


def test_dilated_conv_is_refused():
    with pytest.raises(ValueError, match="dilated"):
        patches(np.zeros((2, 5, 5)), {"kernel_shape": [3, 3], "dilations": [2, 2]})
