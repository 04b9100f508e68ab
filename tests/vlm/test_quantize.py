"""edge/vlm/quantize.py: quantise the starter pack on real textile good images → the new pack loads, passes
`pack check`, stays close to FP32 on held-out real frames, and runs a line (calibrate + inspect); the FP16 pack
likewise; user errors are one line. The speed ratio is a benchmark (`lineside bench int8`), not a test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.images import list_images, read_image
from edge.vlm.check import check_pack
from edge.vlm.pack import load_pack
from edge.vlm.quantize import STATIC_INT8, compare_encoders, fp16_pack, quantize_pack, split_holdout
from edge.vlm.runtime import ImageEncoder

pytest.importorskip("onnx")
REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "models" / "starter"


@pytest.fixture(scope="module")
def int8(textile_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "pack"
    return quantize_pack(STARTER, list_images(textile_images["good"]), out)


@pytest.fixture(scope="module")
def held_out_frames(textile_images) -> list[Path]:
    """Real textile test frames of every label: never seen by the calibration (train good images)."""
    return sorted(textile_images["frames"].iterdir())[::2]


def test_quantised_pack_is_complete_and_new(int8, textile_images):
    src, pack = load_pack(STARTER), load_pack(int8.pack.directory)
    assert pack.version != src.version and "-int8-" in pack.version
    assert pack.image["quantization"] == STATIC_INT8
    files = pack.manifest["files"]
    assert files["image.onnx"] != src.manifest["files"]["image.onnx"]
    assert files["text.onnx"] == src.manifest["files"]["text.onnx"]  # the text tower is kept as it is
    assert set(files) == set(src.manifest["files"])
    q = pack.manifest["provenance"]["quantization"]
    calib, held = split_holdout(list_images(textile_images["good"]))
    assert q["calibration_images"] == int8.calibration_images == len(calib) == 12
    assert q["heldout_images"] == len(held) == 3 and not set(calib) & set(held)
    assert q["source_pack"] == src.version
    assert (pack.directory / "image.onnx").stat().st_size < 0.4 * (STARTER / "image.onnx").stat().st_size


def test_quantised_graph_is_qdq_with_float_ends(int8):
    import onnx

    graph = onnx.load(str(int8.pack.path("image.onnx"))).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    def normalising_divs(name: str) -> list:
        """The Divs by a norm that end an output, through the starter's scale-and-concatenate of unit parts."""
        node = producer[name]
        if node.op_type == "Div":
            return [node]
        assert node.op_type in ("Concat", "Mul"), node.op_type  # float: no Quantize/Dequantize on the way
        return [d for i in node.input if i in producer and producer[i].op_type != "Constant"
                for d in normalising_divs(i)]

    for out in graph.output:  # each output (part) is L2-normalised in float: Div of the tensor by its ReduceL2 norm
        divs = normalising_divs(out.name)
        assert divs
        for div in divs:
            norm = [producer[i] for i in div.input if i in producer and producer[i].op_type != "DequantizeLinear"]
            assert norm and all("QuantizeLinear" not in consumers.get(o, []) for n in norm for o in n.output)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert producer.get(convs[0].input[1]) is None  # the first layers keep their float weights (kept_float)
    assert producer[convs[-1].input[1]].op_type == "DequantizeLinear"  # the rest are int8


def test_quantised_pack_passes_check(int8):
    results = check_pack(int8.pack.directory)
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]
    assert any(r.name == "reference embedding" for r in results)


def test_int8_close_to_fp32_on_held_out_real_frames(int8, held_out_frames):
    fp32 = ImageEncoder(load_pack(STARTER), "cpu")
    q = ImageEncoder(int8.pack, "cpu")
    acc = compare_encoders(fp32, q, held_out_frames)
    # measured here with nearest rounding, 6 float layers (12 calibration images, 12 frames): global mean 0.969 /
    # worst 0.940, patch means 0.994 / 0.986 (GPTQ, the default, is closer: test_gptq_rounding_…);
    # the global embedding's structure half (the mean direction of the stride-8 structure vectors) moves most. What
    # a line loses is the AUROC change (`lineside pack quantize --eval`, BENCHMARKS.md), not tested here (minutes)
    assert acc["global_cosine_mean"] > 0.95 and acc["global_cosine_min"] > 0.9, acc
    assert acc["patch_s8_cosine_mean"] > 0.97 and acc["patch_s16_cosine_mean"] > 0.97, acc
    emb = q.encode(read_image(held_out_frames[0]))
    assert abs(float(np.linalg.norm(emb.global_)) - 1) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(emb.patches[8], axis=-1), 1.0, atol=1e-4)
    # the result's own report is the same measurement on its held-out good images
    assert set(int8.accuracy) == set(acc) and int8.accuracy["global_cosine_mean"] > 0.95


def test_int8_pack_runs_a_line(int8, textile_images, tmp_path):
    from edge.fit.calibrate import calibrate
    from edge.inspect.inspector import Inspector
    from edge.vlm.vocabulary import load_vocabulary

    good = list_images(textile_images["good"])[:8]
    profile = calibrate(int8.pack, load_vocabulary(), good, "int8-line", tmp_path / "profile", provider="cpu")
    assert profile.pack_version == int8.pack.version
    inspector = Inspector(int8.pack, profile, "cpu")
    scores = {}
    for label in ("nominal", "global"):
        frames = sorted(textile_images[f"test_{label}"].iterdir())[:3]
        scores[label] = [inspector.inspect(read_image(f)).anomaly_score for f in frames]
    assert min(scores["global"]) > max(scores["nominal"])  # texture defects stand out on the int8 encoder too


def test_fp16_pack(tmp_path, held_out_frames):
    pack = fp16_pack(STARTER, tmp_path / "fp16")
    assert "-fp16-" in pack.version and pack.image["quantization"] == "fp16"
    assert "quantization" in pack.text and pack.text["quantization"] == "dynamic-int8"  # kept, not converted
    assert all(r.ok for r in check_pack(pack.directory))
    acc = compare_encoders(ImageEncoder(load_pack(STARTER), "cpu"), ImageEncoder(pack, "cpu"), held_out_frames[:4])
    assert acc["global_cosine_min"] > 0.999 and acc["patch_s8_cosine_min"] > 0.99, acc


def test_cli_user_errors_are_one_line(int8, textile_images, tmp_path):
    runner = CliRunner()
    # an existing, non-empty output directory
    r = runner.invoke(app, ["pack", "quantize", str(STARTER), "--good", str(textile_images["good"]), "--out",
                            str(int8.pack.directory)])
    assert r.exit_code == 2 and "exists and is not an empty directory" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    # quantising an int8 pack again
    r = runner.invoke(app, ["pack", "quantize", str(int8.pack.directory), "--good", str(textile_images["good"]),
                            "--out", str(tmp_path / "again")])
    assert r.exit_code == 2 and "already quantised" in r.output
    r = runner.invoke(app, ["pack", "quantize", str(STARTER), "--good", str(tmp_path / "none"), "--out",
                            str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a directory of images" in r.output
    r = runner.invoke(app, ["pack", "quantize", str(STARTER), "--good", str(textile_images["good"]), "--out",
                            str(tmp_path / "x"), "--target", "vax"])
    assert r.exit_code == 2 and "unknown --target" in r.output
    r = runner.invoke(app, ["pack", "quantize", str(STARTER), "--good", str(textile_images["good"]), "--out",
                            str(tmp_path / "x"), "--rounding", "stochastic"])
    assert r.exit_code == 2 and "unknown --rounding" in r.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))  # nothing half-written


def test_cli_quantize_writes_a_pack(textile_images, tmp_path):
    out = tmp_path / "q"
    r = CliRunner().invoke(app, ["pack", "quantize", str(STARTER), "--good", str(textile_images["good"]),
                                 "--out", str(out), "--max-images", "4", "--target", "x86"])
    assert r.exit_code == 0, r.output
    assert "4 calibration images" in r.output and "global_cosine_mean" in r.output
    assert "note: quantised for an x86 CPU without VNNI" in r.output  # what such a CPU costs, said once
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["quantization"]["calibration_images"] == 4
    assert manifest["provenance"]["quantization"]["target"] == "x86"
    assert load_pack(out).version == f"{manifest['name']}@{manifest['version']}"


def test_gptq_rounding_moves_only_integers_and_comes_closer_to_fp32(int8, textile_images, held_out_frames,
                                                                    tmp_path):
    """The default pack (GPTQ rounding) against nearest rounding on the same calibration: the same graph and
    scales, other int8 weights and int32 biases, and embeddings closer to FP32 on frames neither saw."""
    import onnx
    from onnx import numpy_helper

    nearest = quantize_pack(STARTER, list_images(textile_images["good"]), tmp_path / "nearest", rounding="nearest")
    q = int8.pack.manifest["provenance"]["quantization"]
    assert q["rounding"] == "gptq" and q["gptq_layers"] > 30 and q["gptq_weights_changed"] > 0
    assert nearest.pack.manifest["provenance"]["quantization"]["rounding"] == "nearest"
    graphs = [onnx.load(str(p.path("image.onnx"))).graph for p in (int8.pack, nearest.pack)]
    assert [n.op_type for n in graphs[0].node] == [n.op_type for n in graphs[1].node]
    gptq, plain = ({i.name: numpy_helper.to_array(i) for i in g.initializer} for g in graphs)
    assert gptq.keys() == plain.keys()
    for name in (k for k in gptq if k.endswith("_scale") or k.endswith("_zero_point")):
        np.testing.assert_array_equal(gptq[name], plain[name], err_msg=name)
    moved = [k for k in gptq if k.endswith("_quantized") and not np.array_equal(gptq[k], plain[k])]
    assert any(gptq[k].dtype == np.int8 for k in moved) and any(gptq[k].dtype == np.int32 for k in moved)
    fp32 = ImageEncoder(load_pack(STARTER), "cpu")
    a = compare_encoders(fp32, ImageEncoder(int8.pack, "cpu"), held_out_frames)
    b = compare_encoders(fp32, ImageEncoder(nearest.pack, "cpu"), held_out_frames)
    assert a["global_cosine_mean"] > b["global_cosine_mean"] + 0.01, (a, b)
    assert a["patch_s8_cosine_mean"] > b["patch_s8_cosine_mean"] and \
        a["patch_s16_cosine_mean"] > b["patch_s16_cosine_mean"], (a, b)


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from edge.cli.pack import quantize
    from edge.vlm.quantize import FLOAT_LAYERS, ROUNDING

    params = inspect.signature(quantize).parameters
    assert params["float_layers"].default == FLOAT_LAYERS and params["rounding"].default == ROUNDING
