"""models/export_hf.py: a tiny randomly initialised CLIP and SigLIP (built from configs, saved with save_pretrained,
nothing downloaded) exported to packs; ONNX Runtime ≈ torch for global, patch and text embeddings, through the
runtime's own ImageEncoder / TextEncoder; the packs pass `pack check`; a one-stride pack runs calibrate + inspect
end to end on real textile images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.models.scripts import load_script

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.build

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "photo", "of", "the", "flawless", "scratched", "scratch", "surface", "spot", "dark", "on", "part",
         "close-up", "fabric", "good", "bad", "crack", "hole", "clean", "image", "with", ".", ","]
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 32, "patch_size": 8}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
PROMPTS = ["a photo of a flawless fabric.", "a dark spot on the surface", "scratch", "a crack, a hole and a spot"]
ATOL = 2e-4  # float32 ONNX Runtime vs torch on unit vectors


def _exporter():
    return load_script("export_hf")


def _tokenizer(first: list[str], last: list[str], template: str):
    """A word-level fast tokenizer (the `tokenizers` library, nothing downloaded) with `first` specials at the start
    of the vocabulary and `last` at its end (real CLIP's EOS is its largest id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate([*first, "[UNK]", *WORDS, *last])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in [*first, *last] if s in template])
    return tok, vocab


def _save_clip(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    tok, vocab = _tokenizer(["<pad>", "<|startoftext|>"], ["<|endoftext|>"], "<|startoftext|> $A <|endoftext|>")
    text = {**TINY_TEXT, "vocab_size": len(vocab), "max_position_embeddings": 16, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": vocab["<|endoftext|>"]}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=24)).eval()
    out = root / "tiny-clip"
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    (out / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4, 0.45, 0.5],
                                                              "image_std": [0.25, 0.26, 0.27]}))
    return out


def _save_siglip(root: Path) -> Path:
    from transformers import SiglipConfig, SiglipModel

    tok, vocab = _tokenizer(["<unk>", "</s>"], [], "$A </s>")
    text = {**TINY_TEXT, "vocab_size": len(vocab), "max_position_embeddings": 12, "pad_token_id": 1,
            "eos_token_id": 1}
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=TINY_VISION)).eval()
    out = root / "tiny-siglip"
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module")
def exporter():
    return _exporter()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"clip": _save_clip(root), "siglip": _save_siglip(root)}


@pytest.fixture(scope="module")
def packs(exporter, checkpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packs")
    return {kind: exporter.export_hf(ckpt, root / kind).directory for kind, ckpt in checkpoints.items()}


def _textile_bgr(n: int) -> list[np.ndarray]:
    import cv2

    from edge.datasets import textile_split

    items = textile_split("test")
    return [cv2.imread(str(items[i][0])) for i in np.linspace(0, len(items) - 1, n).astype(int)]


def _torch_reference(kind: str, ckpt: Path, batch: np.ndarray, prompts: list[str], tokenizer_path: Path):
    """The checkpoint's own outputs, computed the way transformers documents them (not through the exporter's
    wrappers): pooled features from get_image_features / get_text_features, and the dense patches by hand."""
    from tokenizers import Tokenizer
    from transformers import CLIPModel, SiglipModel

    model = (CLIPModel if kind == "clip" else SiglipModel).from_pretrained(ckpt, attn_implementation="eager").eval()
    x = torch.from_numpy(batch)
    tok = Tokenizer.from_file(str(tokenizer_path))
    with torch.no_grad():
        g = model.get_image_features(pixel_values=x).pooler_output
        tokens = model.vision_model(pixel_values=x).last_hidden_state
        if kind == "clip":
            dense = model.visual_projection(model.vision_model.post_layernorm(tokens[:, 1:]))
            enc = tok.encode_batch(prompts)
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            t = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        else:
            head = model.vision_model.head
            w = head.attention.embed_dim
            v = torch.nn.functional.linear(tokens, head.attention.in_proj_weight[2 * w:],
                                           head.attention.in_proj_bias[2 * w:])
            v = head.attention.out_proj(v)
            dense = v + head.mlp(head.layernorm(v))
            # SigLIP as its processor feeds it: padded to max_length with the pad token, no attention mask
            length = model.config.text_config.max_position_embeddings
            tok.enable_padding(pad_id=1, pad_token="</s>", length=length)
            ids = torch.tensor([e.ids for e in tok.encode_batch(prompts)])
            t = model.get_text_features(input_ids=ids).pooler_output
    unit = torch.nn.functional.normalize
    n, hw, d = dense.shape
    side = int(round(hw ** 0.5))
    patches = unit(dense, dim=-1).reshape(n, side, side, d)  # channels last, like the runtime
    return unit(g, dim=-1).numpy(), patches.numpy(), unit(t, dim=-1).numpy()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_export_matches_torch_through_the_runtime(kind, packs, checkpoints):
    from edge.vlm.pack import load_pack
    from edge.vlm.runtime import ImageEncoder, TextEncoder

    pack = load_pack(packs[kind])
    m = pack.manifest
    assert m["image"]["patch_strides"] == [8] and m["image"]["size"] == [32, 32]
    assert m["image"]["outputs"]["patches"] == {"8": "patches_s8"}
    assert m["embedding_dim"] == (24 if kind == "clip" else 32)
    assert set(m["files"]) == {"image.onnx", "text.onnx", "tokenizer.json", "reference.npz"}
    if kind == "clip":  # preprocessor_config.json is honoured
        assert m["image"]["mean"] == [0.4, 0.45, 0.5] and m["image"]["std"] == [0.25, 0.26, 0.27]
        assert 0 < m["logit_scale"] <= 100
    else:
        assert m["image"]["mean"] == [0.5, 0.5, 0.5] and "logit_bias" in m
    image_encoder, text_encoder = ImageEncoder(pack, "cpu"), TextEncoder(pack, "cpu")
    frames = _textile_bgr(3)
    batch = np.stack([image_encoder.preprocess(f) for f in frames])
    embs = image_encoder.encode_batch(batch)  # batch of 3: the batch axis is dynamic
    g, p, t = _torch_reference(kind, checkpoints[kind], batch, PROMPTS, pack.path("tokenizer.json"))
    onnx_g = np.stack([e.global_ for e in embs])
    onnx_p = np.stack([e.patches[8] for e in embs])
    assert onnx_p.shape == (3, 4, 4, m["embedding_dim"])
    assert np.abs(onnx_g - g).max() < ATOL
    assert np.abs(onnx_p - p).max() < ATOL
    np.testing.assert_allclose(np.linalg.norm(onnx_p, axis=-1), 1.0, atol=1e-5)
    onnx_t = text_encoder.encode(PROMPTS)  # padded to the longest prompt, as the daemon encodes its prompt bank
    assert np.abs(onnx_t - t).max() < ATOL
    # one prompt at a time gives the same embedding as in a padded batch
    assert np.abs(text_encoder.encode(PROMPTS[2:3])[0] - onnx_t[2]).max() < ATOL
    # the dense patches are not a copy of the global embedding: they vary over the image
    assert float(np.std(onnx_p.reshape(-1, onnx_p.shape[-1]) @ onnx_g[0])) > 1e-3


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_exported_pack_passes_pack_check(kind, packs):
    from edge.vlm.check import check_pack

    results = check_pack(packs[kind])
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]
    assert any(r.name == "reference embedding" for r in results)
    assert any(r.name == "reference patches_s8" for r in results)


def test_unit_is_f_normalize(exporter):
    x = torch.randn(3, 8, 4, 4)
    x[0] = 0.0  # a zero vector stays zero, as F.normalize leaves it
    for dim in (1, -1):
        assert torch.equal(exporter.unit(x, dim), torch.nn.functional.normalize(x, dim=dim))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_exported_normalisation_divides_by_broadcasting(kind, packs):
    """No Shape → Expand of the norm before a Div: in an int8 pack that Expand's Shape needs the embedding
    dequantised once more (BENCHMARKS.md, INT8)."""
    import onnx

    for name in ("image.onnx", "text.onnx"):
        graph = onnx.load(str(packs[kind] / name)).graph
        producer = {out: node.op_type for node in graph.node for out in node.output}
        divisors = [producer.get(node.input[1]) for node in graph.node if node.op_type == "Div"]
        assert "ReduceL2" in producer.values() or "Sqrt" in producer.values()
        assert "Expand" not in divisors, name


def test_one_stride_pack_calibrates_and_inspects(packs, tmp_path):
    from edge.datasets import textile_split
    from edge.fit.calibrate import calibrate
    from edge.inspect.inspector import Inspector
    from edge.vlm.pack import load_pack
    from edge.vlm.vocabulary import load_vocabulary

    pack = load_pack(packs["clip"])
    good = [p for p, lab in textile_split("train") if lab == "nominal"][:6]
    profile = calibrate(pack, load_vocabulary(), good, "tiny", tmp_path / "profile", provider="cpu")
    assert set(profile.bank) == {8}
    inspector = Inspector(pack, profile, "cpu")
    for frame in _textile_bgr(2):
        result = inspector.inspect(frame)
        assert result.anomaly_map.ndim == 2 and np.isfinite(result.anomaly_map).all()
        assert result.verdict


def test_export_refuses_what_it_cannot_export(exporter, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(exporter.ExportError, match="model_type 'bert' is not supported"):
        exporter.export_hf(tmp_path / "ckpt", tmp_path / "out")
    with pytest.raises(exporter.ExportError, match="no config.json"):
        exporter.export_hf(tmp_path, tmp_path / "out2")


def test_cli_export(checkpoints, tmp_path):
    from typer.testing import CliRunner

    from edge.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["pack", "export", str(checkpoints["siglip"]), "--out", str(tmp_path / "p"),
                            "--name", "my siglip"])
    assert r.exit_code == 0, r.output
    assert "pack my-siglip@" in r.output and (tmp_path / "p" / "reference.npz").is_file()
    r = runner.invoke(app, ["pack", "export", str(checkpoints["siglip"]), "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "exists and is not an empty directory" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["pack", "export", str(tmp_path / "nothing"), "--out", str(tmp_path / "q")])
    assert r.exit_code == 2 and "not a directory" in r.output and "Traceback" not in r.output
