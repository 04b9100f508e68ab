"""Export a Hugging Face `transformers` CLIP or SigLIP checkpoint directory as a lineside model pack.

    python models/export_hf.py CHECKPOINT_DIR --out models/my-clip
    lineside pack export CHECKPOINT_DIR --out models/my-clip          # the same, from the CLI

CHECKPOINT_DIR is what `save_pretrained` writes (config.json + weights) for a `CLIPModel` or `SiglipModel`, with the
checkpoint's fast tokenizer (`tokenizer.json`, else `AutoTokenizer(...).backend_tokenizer` is saved) and, if there,
`preprocessor_config.json` (image mean/std). Nothing is downloaded: the checkpoint must be on disk.

The pack (format: models/README.md) has `image.onnx` — input `image` [N,3,S,S] → `embedding` [N,D] and
`patches_s{P}` [N,D,S/P,S/P] (one stride: the ViT's patch size P) — and `text.onnx` — `input_ids`,
`attention_mask` [N,L] → `embedding` [N,D], all outputs L2-normalised along D (the runtime scores with plain dot
products), plus `tokenizer.json`, `reference.npz` (torch's outputs on two fixed images and a few prompts, which
`lineside pack check` makes the runtime reproduce) and `manifest.json`.

Dense patch embeddings, the choice made here:
- CLIP: the pooled embedding is `visual_projection(post_layernorm(CLS))`. The patch embedding is the same map applied
  to each patch token of the last layer, `visual_projection(post_layernorm(token))` — the dense-CLIP recipe of
  WinCLIP and of MaskCLIP's simplest form: the joint space is reached through the very norm and projection the CLS
  token takes. (MaskCLIP's further trick, taking the last block's value path instead of its attention output,
  changes the last block and is not applied: the exported graph is the checkpoint's own network.)
- SigLIP has no CLS token and no separate projection: the pooled embedding is the multi-head attention-pooling
  head (MAP) on `post_layernorm(tokens)`: a learned probe attends over all tokens, then `out_proj`, a residual MLP.
  The head is applied to each patch token as if the probe attended to that token alone (attention weight 1): value
  projection → `out_proj` → `+ mlp(layernorm(·))`. The pooled embedding is exactly this map on the attention-weighted
  mean of the value vectors, so a patch embedding is what the head would say if the image were that patch everywhere
  — the MaskCLIP value-path idea applied to the pooling head, and the only way to land patches in the space the text
  head was trained against (post_layernorm tokens alone live in the vision width, not the joint space).
- Text: CLIP's pooled EOS token → `text_projection`; SigLIP's last position → `head`. SigLIP was trained on
  sequences padded to `max_position_embeddings` (64) with its pad token and no attention mask, and pools the last
  position, so the text graph itself re-pads what the runtime feeds (pad to longest, id 0) to that length with the
  checkpoint's pad id before the model: the runtime stays unchanged and the embedding is the checkpoint's.
- Scores: the manifest's `logit_scale` is `exp(logit_scale)` of the checkpoint (CLIP clamps it to 100). SigLIP's
  `logit_bias` is recorded too; the runtime's softmax over classes does not need it (a shared offset cancels).
- Preprocessing: the runtime resizes the whole frame to S×S (INTER_AREA), no centre crop (a line camera frames the
  part); mean/std come from `preprocessor_config.json`, else the model family's defaults.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from edge.vlm.pack import ModelPack, PackError  # noqa: E402
from edge.vlm.pack_write import Reference, check_new_pack_dir, finish_pack, staged_directory  # noqa: E402

OPSET = 17
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, transformers' OPENAI_CLIP_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
REFERENCE_PROMPTS = ("a photo of a flawless surface.", "a photo of a scratch on the surface.",
                     "a close-up of a dark spot on a part.")
SUPPORTED = ("clip", "siglip")


class ExportError(RuntimeError):
    """A checkpoint that cannot be exported; the message is one line."""


def unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / max(‖x‖, 1e-12) along `dim`: F.normalize's values, exported without its Shape → Expand of the norm (the
    division broadcasts). In an int8 pack the tensor is then dequantised for two consumers, not three; the INT8
    image tower of the starter pack runs measurably faster, the FP32 one no slower (BENCHMARKS.md)."""
    return x / x.norm(p=2, dim=dim, keepdim=True).clamp_min(1e-12)


class ClipImageTower(nn.Module):
    """image [N,3,S,S] → (embedding [N,D], patches [N,D,S/P,S/P]), unit-norm."""

    def __init__(self, model: nn.Module, grid: int) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.projection = model.visual_projection
        self.grid = grid

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vision(pixel_values=image).last_hidden_state  # before post_layernorm
        joint = self.projection(self.vision.post_layernorm(tokens))
        patches = unit(joint[:, 1:], -1).transpose(1, 2).unflatten(2, (self.grid, self.grid))
        return unit(joint[:, 0], -1), patches


class SiglipImageTower(nn.Module):
    """image [N,3,S,S] → (embedding [N,D], patches [N,D,S/P,S/P]), unit-norm; patches through the pooling head
    with the attention of each token on itself (module docstring)."""

    def __init__(self, model: nn.Module, grid: int) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.head = self.vision.head
        self.grid = grid

    def _value(self, tokens: torch.Tensor) -> torch.Tensor:
        attn = self.head.attention  # torch.nn.MultiheadAttention
        width = attn.embed_dim
        if attn.in_proj_weight is not None:
            weight, bias = attn.in_proj_weight[2 * width:], attn.in_proj_bias
        else:
            weight, bias = attn.v_proj_weight, attn.in_proj_bias
        v = F.linear(tokens, weight, None if bias is None else bias[2 * width:])
        return attn.out_proj(v)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vision(pixel_values=image).last_hidden_state  # SigLIP: after post_layernorm
        pooled = self.head(tokens)
        v = self._value(tokens)
        dense = v + self.head.mlp(self.head.layernorm(v))
        patches = unit(dense, -1).transpose(1, 2).unflatten(2, (self.grid, self.grid))
        return unit(pooled, -1), patches


class ClipTextTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.text = model.text_model
        self.projection = model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return unit(self.projection(pooled), -1)


class SiglipTextTower(nn.Module):
    """Re-pads the runtime's batch to the trained length with the checkpoint's pad id (module docstring)."""

    def __init__(self, model: nn.Module, length: int, pad_id: int) -> None:
        super().__init__()
        self.text = model.text_model
        self.length = length
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = torch.where(attention_mask > 0, input_ids, torch.full_like(input_ids, self.pad_id))
        # append a full row of padding and cut: a static slice, so the graph needs no data-dependent Pad
        tail = torch.full_like(ids[:, :1], self.pad_id).expand(-1, self.length)
        ids = torch.cat([ids, tail], dim=1)[:, :self.length]
        return unit(self.text(input_ids=ids).pooler_output, -1)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def load_checkpoint(checkpoint: Path) -> tuple[nn.Module, str]:
    """The transformers model (eval, eager attention) and its model_type; offline only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not (checkpoint / "config.json").is_file():
        raise ExportError(f"{checkpoint}: no config.json (expected a save_pretrained directory of a CLIPModel or "
                          "SiglipModel)")
    model_type = str(_read_json(checkpoint / "config.json").get("model_type", ""))
    if model_type not in SUPPORTED:
        raise ExportError(f"{checkpoint}: model_type '{model_type}' is not supported (clip or siglip)")
    from transformers import CLIPModel, SiglipModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI prints one line per outcome
    cls = CLIPModel if model_type == "clip" else SiglipModel
    try:
        model = cls.from_pretrained(str(checkpoint), attn_implementation="eager", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{checkpoint}: cannot load {cls.__name__}: {str(exc).splitlines()[0]}") from None
    model.eval()
    if model_type == "siglip" and getattr(model.vision_model, "head", None) is None:
        raise ExportError(f"{checkpoint}: this SigLIP vision tower has no pooling head (vision_use_head=false)")
    return model, model_type


def load_tokenizer(checkpoint: Path, max_length: int, pad_id: int) -> Any:
    """The checkpoint's fast tokenizer (`tokenizer.json`, else transformers' backend_tokenizer), set to truncate at
    `max_length` and pad to the longest in a batch, as the runtime uses it."""
    from tokenizers import Tokenizer

    path = checkpoint / "tokenizer.json"
    if path.is_file():
        tok = Tokenizer.from_file(str(path))
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True).backend_tokenizer
        except (OSError, ValueError, AttributeError) as exc:
            raise ExportError(f"{checkpoint}: no tokenizer.json and no fast tokenizer: {exc}") from None
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=tok.id_to_token(pad_id) or "[PAD]")
    return tok


def preprocessing(checkpoint: Path, model_type: str) -> tuple[list[float], list[float]]:
    conf = _read_json(checkpoint / "preprocessor_config.json")
    default = (CLIP_MEAN, CLIP_STD) if model_type == "clip" else (SIGLIP_MEAN, SIGLIP_STD)
    mean = conf.get("image_mean", default[0])
    std = conf.get("image_std", default[1])
    if conf.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


def reference_images(size: int, n: int = 2) -> np.ndarray:
    """Fixed [n, size, size, 3] uint8 RGB images (gradients, a bright bar, seeded noise): the same bytes on every
    machine, so a pack's references need no data set."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    out = []
    for i in range(n):
        img = np.stack([xx, yy, 1 - (xx + yy) / 2], -1) * 200 + rng.normal(0, 12, (size, size, 3))
        lo, hi = size // 4 + i * size // 8, size // 4 + i * size // 8 + max(size // 8, 1)
        img[lo:hi, size // 8:size - size // 8] = (250, 240, 40)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "pack"


@torch.no_grad()
def export_hf(checkpoint: Path | str, out: Path | str, name: str | None = None,
              images_rgb: np.ndarray | None = None) -> ModelPack:
    """Export a CLIP / SigLIP checkpoint directory into a new pack directory `out` (must not exist or be empty)."""
    import transformers

    from edge.vlm.runtime import ImagePreprocessor

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_dir():
        raise ExportError(f"{checkpoint}: not a directory")
    check_new_pack_dir(out, checkpoint)  # before minutes of loading and tracing
    model, model_type = load_checkpoint(checkpoint)
    vcfg, tcfg = model.config.vision_config, model.config.text_config
    size, patch = int(vcfg.image_size), int(vcfg.patch_size)
    if size % patch:
        raise ExportError(f"{checkpoint}: image_size {size} is not a multiple of patch_size {patch}")
    grid = size // patch
    max_length = int(tcfg.max_position_embeddings)
    if model_type == "clip":
        image_tower: nn.Module = ClipImageTower(model, grid)
        text_tower: nn.Module = ClipTextTower(model)
        pad_id = 0  # causal attention + the mask: what follows the EOS token never reaches it
        scale = float(model.logit_scale.exp().clamp(max=100.0))
        extra: dict[str, Any] = {}
    else:
        pad_id = int(tcfg.pad_token_id if tcfg.pad_token_id is not None else 0)
        image_tower = SiglipImageTower(model, grid)
        text_tower = SiglipTextTower(model, max_length, pad_id)
        scale = float(model.logit_scale.exp())
        extra = {"logit_bias": round(float(model.logit_bias), 6)}
    image_tower.eval()
    text_tower.eval()
    tok = load_tokenizer(checkpoint, max_length, pad_id)
    mean, std = preprocessing(checkpoint, model_type)
    stride_key = f"patches_s{patch}"
    manifest: dict[str, Any] = {
        "name": _safe_name(name or checkpoint.name),
        "version": "",
        "embedding_dim": 0,
        "logit_scale": round(scale, 4),
        **extra,
        "image": {"file": "image.onnx", "input": "image", "size": [size, size], "color": "RGB", "mean": mean,
                  "std": std, "outputs": {"embedding": "embedding", "patches": {str(patch): stride_key}},
                  "patch_strides": [patch]},
        "text": {"file": "text.onnx", "tokenizer": "tokenizer.json", "max_length": max_length,
                 "inputs": ["input_ids", "attention_mask"], "output": "embedding"},
        "files": {},
    }
    with staged_directory(out, checkpoint) as staging:
        # traced on one image and one short prompt; the references below use other batch sizes and lengths, so a
        # shape the tracer froze would make write_reference refuse the pack
        trace_ids = torch.tensor([tok.encode("a photo.").ids], dtype=torch.int64)
        with warnings.catch_warnings():
            # the TorchScript exporter's deprecation and tracer notes about Python-side shape checks in transformers
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            torch.onnx.export(image_tower, (torch.zeros(1, 3, size, size),), str(staging / "image.onnx"),
                              dynamo=False, opset_version=OPSET, input_names=["image"],
                              output_names=["embedding", stride_key],
                              dynamic_axes={"image": {0: "N"}, "embedding": {0: "N"}, stride_key: {0: "N"}},
                              do_constant_folding=True)
            torch.onnx.export(text_tower, (trace_ids, torch.ones_like(trace_ids)), str(staging / "text.onnx"),
                              dynamo=False, opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "N", 1: "L"}, "attention_mask": {0: "N", 1: "L"},
                                            "embedding": {0: "N"}}, do_constant_folding=True)
        tok.save(str(staging / "tokenizer.json"))
        enc = tok.encode_batch(list(REFERENCE_PROMPTS))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        # torch's outputs on the runtime's own preprocessing of the reference images: the pack stores these, and
        # write_reference refuses the pack if ONNX Runtime does not reproduce them
        images = reference_images(size) if images_rgb is None else np.asarray(images_rgb, np.uint8)
        draft = ModelPack(staging, manifest)
        pre = ImagePreprocessor.from_pack(draft)
        batch = torch.from_numpy(np.stack([pre(im[..., ::-1].copy()) for im in images]))
        g, p = image_tower(batch)
        t = text_tower(ids, mask)
        manifest["embedding_dim"] = int(g.shape[1])
        if int(t.shape[1]) != int(g.shape[1]):
            raise ExportError(f"{checkpoint}: image embedding {g.shape[1]}-d but text embedding {t.shape[1]}-d")
        manifest["provenance"] = {
            "exporter": "models/export_hf.py", "source": str(checkpoint.resolve()), "model_type": model_type,
            "architectures": list(getattr(model.config, "architectures", None) or [type(model).__name__]),
            "dense": ("visual_projection(post_layernorm(patch tokens))" if model_type == "clip" else
                      "MAP head with self-only attention on post_layernorm(patch tokens)"),
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0], "opset": OPSET,
            "export_command": f"python models/export_hf.py {checkpoint} --out {out}",
        }
        expected = {"embedding": g.numpy(), stride_key: p.numpy(), "text_embedding": t.numpy()}
        reference = Reference(images, list(REFERENCE_PROMPTS), expected=expected)
        finish_pack(staging, manifest, ["image.onnx", "text.onnx", "tokenizer.json"],
                    f"{_dt.date.today():%Y%m%d}", reference)
    from edge.vlm.pack import load_pack

    return load_pack(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="save_pretrained directory of a CLIPModel or SiglipModel")
    ap.add_argument("--out", type=Path, required=True, help="new pack directory")
    ap.add_argument("--name", help="pack name (default: the checkpoint directory's name)")
    args = ap.parse_args(argv)
    try:
        pack = export_hf(args.checkpoint, args.out, args.name)
    except (ExportError, PackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pack {pack.version} written to {pack.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
