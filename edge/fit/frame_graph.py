"""The profile's per-frame work as one ONNX graph (torch, exported at calibrate / train time).

Inputs are the pack's image-tower outputs as they come out of it (`embedding` [N, D], `patches_s{stride}`
[N, D, h, w]), so the daemon feeds the encoder's outputs straight in, on the same provider. Outputs:

- `zero_s{stride}`, `few_s{stride}` [N, h, w]: the raw zero-shot (1 − p(good) against the prompt ensembles) and
  few-shot (1 − cosine to the nearest memory-bank patch) scores per patch;
- `anomaly_map` [N, H, W]: both put on one scale with the good-image statistics, weighted, brought to the finest
  grid, averaged over strides and smoothed (edge.grounding.anomaly: combine, smooth);
- `global_score` [N]: the whole frame's zero-shot score;
- `features` [N, F]: the frame's feature row (edge.grounding.classifier.frame_features) that the classifier head,
  the failure predictor and the OoD detector read.

The numpy functions in edge.grounding stay the reference: the exported graph's outputs on reference inputs are
computed by them and stored beside the graph, and the profile is refused at load when ONNX Runtime does not
reproduce them (edge.profile.graph).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17


def gaussian_3x3() -> np.ndarray:
    """The 3×3 kernel of edge.grounding.anomaly.smooth (σ = 0.5), as OpenCV makes it."""
    k = cv2.getGaussianKernel(3, 0.5).astype(np.float32)
    return np.asarray(k @ k.T, np.float32)


class FrameGraph(nn.Module):
    def __init__(self, strides: Sequence[int], class_embeddings: np.ndarray, logit_scale: float,
                 banks: dict[int, np.ndarray], patch_stats: dict[int, dict[str, tuple[float, float]]],
                 weights: dict[str, float]) -> None:
        super().__init__()
        self.strides = list(strides)
        self.logit_scale = float(logit_scale)
        self.register_buffer("text", torch.from_numpy(np.asarray(class_embeddings, np.float32)))
        self.modes: dict[int, list[tuple[str, float, float, float]]] = {}  # stride -> (mode, weight, mean, std)
        for stride in self.strides:
            if stride in banks and banks[stride].size:
                self.register_buffer(f"bank_s{stride}", torch.from_numpy(np.ascontiguousarray(
                    np.asarray(banks[stride], np.float32).T)))
            modes = ["zero"] + (["few"] if stride in banks and banks[stride].size else [])
            self.modes[stride] = [(m, float(weights.get(m, 0.0)), *patch_stats[stride][m]) for m in modes
                                  if weights.get(m, 0.0) > 0]
        self.register_buffer("smoothing", torch.from_numpy(gaussian_3x3())[None, None])

    def forward(self, embedding: torch.Tensor, *patches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        text = self.text
        raw: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        finest = patches[0].shape[-2:]
        for stride, grid in zip(self.strides, patches, strict=True):
            n, d, h, w = grid.shape
            flat = grid.flatten(2).transpose(1, 2)  # [N, hw, D]
            zero = 1.0 - torch.softmax(self.logit_scale * (flat @ text.T), dim=-1)[..., 0]
            scores = {"zero": zero}
            if hasattr(self, f"bank_s{stride}"):
                scores["few"] = 1.0 - (flat @ getattr(self, f"bank_s{stride}")).amax(dim=-1)
            raw += [scores["zero"].reshape(n, h, w), scores.get("few", torch.zeros_like(zero)).reshape(n, h, w)]
            if not self.modes[stride]:
                continue
            total = sum(weight * (scores[mode] - mean) / max(std, 1e-6)
                        for mode, weight, mean, std in self.modes[stride])
            per_stride = (total / sum(weight for _, weight, _, _ in self.modes[stride])).reshape(n, 1, h, w)
            if (h, w) != tuple(finest):
                per_stride = F.interpolate(per_stride, size=tuple(finest), mode="bilinear", align_corners=False)
            maps.append(per_stride)
        combined = torch.stack(maps).mean(dim=0)  # [N, 1, H, W]
        anomaly_map = F.conv2d(F.pad(combined, (1, 1, 1, 1), mode="replicate"), self.smoothing)[:, 0]
        logits = self.logit_scale * (embedding @ text.T)
        global_score = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
        flat_map = anomaly_map.flatten(1)
        top = torch.topk(flat_map, max(1, flat_map.shape[1] // 50), dim=1).values
        stats = torch.stack([top[:, 0], top.mean(dim=1), flat_map.mean(dim=1), global_score], dim=1)
        pooled = [grid.flatten(2).mean(dim=2) for grid in patches]
        features = torch.cat([embedding, *pooled, stats], dim=1)
        return (anomaly_map, global_score, features, *raw)

    def output_names(self) -> list[str]:
        return ["anomaly_map", "global_score", "features"] + [f"{kind}_s{s}" for s in self.strides
                                                               for kind in ("zero", "few")]


def export_onnx(graph: FrameGraph, input_names: Sequence[str], dim: int, grids: Sequence[tuple[int, int]]) -> bytes:
    """The graph as ONNX bytes (opset 17, dynamic batch), traced on a batch of two."""
    graph.eval()
    dummy = (torch.zeros(2, dim), *(torch.zeros(2, dim, h, w) for h, w in grids))
    names = list(input_names)
    outputs = graph.output_names()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, dummy, buf, dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=outputs, dynamic_axes={n: {0: "batch"} for n in names + outputs})
    return buf.getvalue()
