"""The profile's per-frame work as one ONNX graph (torch, exported at calibrate / train time).

Inputs are the pack's image-tower outputs as they come out of it (`embedding` [N, D], `patches_s{stride}`
[N, D, h, w], finest stride first), so the daemon feeds the tower's outputs straight in, on the same provider.
Outputs:

- `zero_s{stride}`, `few_s{stride}` [N, h, w]: the raw zero-shot (1 − p(good) against the prompt ensembles) and
  few-shot (1 − cosine to the nearest memory-bank patch; where the profile has a search subspace for the stride,
  among the bank patches nearest in it, the bank stored projected beside the full one; where the profile searches
  coarse to fine, the finest stride only at its patches where the next stride's score is highest, the others that
  score on its scale, edge.grounding.anomaly.coarse_to_fine; 0 where the bank has no patches of that stride) scores;
- `anomaly_map` [N, H, W]: both put on one scale with the good-image statistics, weighted, brought to the finest
  grid, averaged over strides and smoothed (edge.grounding.anomaly: combine, smooth);
- `global_score` [N]: the whole frame's zero-shot score;
- `features` [N, F]: the frame's feature row (edge.grounding.classifier.frame_features) that the classifier head,
  the failure predictor and the OoD detector read;
- `line_map` [N, H, W], when the line has a line model (edge.fit.line_model): its defect logit per patch.

The numpy functions in edge.grounding stay the reference: `frame_graph_files` computes the reference outputs with
them, and a version whose graph ONNX Runtime does not reproduce within edge.profile.graph.ATOL is refused at load.
`int8_search` makes the graph's int8 twin (the few-shot products over the memory bank in int8), kept beside it;
in a coarse-to-fine graph the next stride's product, which chooses the patches searched, stays float.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.fit.line_model import LineModel
from edge.fit.search import TIE_MARGIN, fragile_patches
from edge.grounding.anomaly import (
    SEARCH_CANDIDATES,
    coarse_candidates,
    coarse_to_fine,
    coarse_to_fine_pair,
    combine,
    few_shot_scores,
    global_zero_shot_score,
    raw_scores,
    searched_patches,
    smooth,
)
from edge.grounding.classifier import frame_features
from edge.profile.graph import FrameGraphFiles
from edge.profile.line_profile import LineProfile
from edge.vlm.pack import ModelPack
from edge.vlm.prompts import TextBank
from edge.vlm.runtime import ImageEmbedding, tower_outputs

OPSET = 17
REFERENCE_IMAGES = 2
REFERENCE_CANDIDATES = 8  # frames offered for the references: the first REFERENCE_IMAGES without a near tie are kept


def gaussian_3x3() -> np.ndarray:
    """The 3×3 kernel of edge.grounding.anomaly.smooth (σ = 0.5), as OpenCV makes it."""
    k = cv2.getGaussianKernel(3, 0.5).astype(np.float32)
    return np.asarray(k @ k.T, np.float32)


class FrameGraph(nn.Module):
    def __init__(self, strides: Sequence[int], class_embeddings: np.ndarray, logit_scale: float,
                 banks: dict[int, np.ndarray], patch_stats: dict[int, dict[str, tuple[float, float]]],
                 weights: dict[str, float], line: LineModel | None = None,
                 search_basis: dict[int, np.ndarray] | None = None, coarse_share: float | None = None) -> None:
        super().__init__()
        self.line = line
        self.strides = sorted(strides)
        self.logit_scale = float(logit_scale)
        self.text = nn.Parameter(torch.from_numpy(np.asarray(class_embeddings, np.float32)), requires_grad=False)
        searched = {s: np.asarray(banks[s], np.float32) for s in self.strides if s in banks and banks[s].size}
        basis = {s: np.asarray(b, np.float32) for s, b in (search_basis or {}).items() if s in searched}
        full = {s: searched[s] for s in basis}  # [M, D]: the candidates found in the subspace, compared again
        searched.update({s: searched[s] @ b.T for s, b in basis.items()})  # the bank stored in its search subspace

        def fixed(value: np.ndarray) -> nn.Parameter:
            return nn.Parameter(torch.from_numpy(np.ascontiguousarray(value)), requires_grad=False)

        # [D, k]: a frame's patches onto the search subspace; [D or k, M]: the bank, transposed for the product
        self.bases = nn.ParameterDict({str(s): fixed(b.T) for s, b in basis.items()})
        self.banks = nn.ParameterDict({str(s): fixed(b.T) for s, b in searched.items()})
        self.full_banks = nn.ParameterDict({str(s): fixed(b) for s, b in full.items()})
        # per stride: (mode, weight, good mean, good std) of the modes that enter the map
        self.modes: dict[int, list[tuple[str, float, float, float]]] = {
            s: [(m, float(weights.get(m, 0.0)), *patch_stats[s][m]) for m in ("zero", "few")
                if weights.get(m, 0.0) > 0 and (m == "zero" or str(s) in self.banks)]
            for s in self.strides}
        self.smoothing = nn.Parameter(torch.from_numpy(gaussian_3x3())[None, None], requires_grad=False)
        # coarse-to-fine (edge.grounding.anomaly.coarse_to_fine): the finest stride searched where the next is high
        pair = coarse_to_fine_pair(s for s in self.strides if str(s) in self.banks)
        self.coarse: tuple[int, int, float, tuple[float, float], tuple[float, float]] | None = None
        if coarse_share is not None and pair is not None:
            fine, coarse = pair
            self.coarse = (fine, coarse, float(coarse_share), patch_stats[fine]["few"], patch_stats[coarse]["few"])

    def _few(self, flat: torch.Tensor, stride: int) -> torch.Tensor:
        """1 − the cosine to the nearest bank patch of the stride, for patches [N, n, D]: [N, n]."""
        if str(stride) in self.bases:
            similar = (flat @ self.bases[str(stride)]) @ self.banks[str(stride)]  # [N, n, M]
            top = torch.topk(similar, min(SEARCH_CANDIDATES, similar.shape[-1]), dim=-1).indices
            candidates = self.full_banks[str(stride)][top]  # [N, n, c, D]
            return 1.0 - (candidates @ flat.unsqueeze(-1)).squeeze(-1).amax(dim=-1)
        return 1.0 - (flat @ self.banks[str(stride)]).amax(dim=-1)

    def _coarse_to_fine(self, flat: torch.Tensor, size: tuple[int, int], coarse_few: torch.Tensor) -> torch.Tensor:
        """The finest stride's few-shot scores [N, hw] from a search of only its patches where the next stride's
        scores (`coarse_few` [N, h', w']) are highest; the others get those scores on its scale."""
        assert self.coarse is not None
        fine, _, share, (fine_mean, fine_std), (coarse_mean, coarse_std) = self.coarse
        up = F.interpolate(coarse_few.unsqueeze(1), size=size, mode="bilinear", align_corners=False).flatten(1)
        searched = torch.topk(up, searched_patches(size[0] * size[1], share), dim=1).indices  # [N, k]
        picked = torch.gather(flat, 1, searched.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))  # [N, k, D]
        fill = fine_mean + fine_std * (up - coarse_mean) / max(coarse_std, 1e-6)
        return fill.scatter(1, searched, self._few(picked, fine))

    def forward(self, embedding: torch.Tensor, *patches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        finest = (int(patches[0].shape[-2]), int(patches[0].shape[-1]))
        grids = dict(zip(self.strides, patches, strict=True))
        flats = {s: grid.flatten(2).transpose(1, 2) for s, grid in grids.items()}  # [N, hw, D]
        sizes = {s: (int(grid.shape[-2]), int(grid.shape[-1])) for s, grid in grids.items()}
        few: dict[int, torch.Tensor] = {}
        for stride in reversed(self.strides):  # the coarser strides first: the finest may search where they say
            if self.coarse is not None and stride == self.coarse[0]:
                coarse = self.coarse[1]
                few[stride] = self._coarse_to_fine(flats[stride], sizes[stride],
                                                   few[coarse].reshape(-1, *sizes[coarse]))
            elif str(stride) in self.banks:
                few[stride] = self._few(flats[stride], stride)
        for stride, grid in zip(self.strides, patches, strict=True):
            n, _, h, w = grid.shape
            flat = flats[stride]
            scores = {"zero": 1.0 - torch.softmax(self.logit_scale * (flat @ self.text.T), dim=-1)[..., 0]}
            if stride in few:
                scores["few"] = few[stride]
            raw += [scores["zero"].reshape(n, h, w), scores.get("few", 0.0 * scores["zero"]).reshape(n, h, w)]
            if not self.modes[stride]:
                continue
            total = torch.zeros_like(scores["zero"])
            for mode, weight, mean, std in self.modes[stride]:
                total = total + weight * (scores[mode] - mean) / max(std, 1e-6)
            per_stride = (total / sum(m[1] for m in self.modes[stride])).reshape(n, 1, h, w)
            if (h, w) != finest:
                per_stride = F.interpolate(per_stride, size=finest, mode="bilinear", align_corners=False)
            maps.append(per_stride)
        combined = torch.stack(maps).mean(dim=0)  # [N, 1, H, W]
        anomaly_map = F.conv2d(F.pad(combined, (1, 1, 1, 1), mode="replicate"), self.smoothing)[:, 0]
        logits = self.logit_scale * (embedding @ self.text.T)
        global_score = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
        flat_map = anomaly_map.flatten(1)
        top = torch.topk(flat_map, max(1, flat_map.shape[1] // 50), dim=1).values
        stats = torch.stack([top[:, 0], top.mean(dim=1), flat_map.mean(dim=1), global_score], dim=1)
        pooled = [grid.flatten(2).mean(dim=2) for grid in patches]
        features = torch.cat([embedding, *pooled, stats], dim=1)
        if self.line is None:
            return (anomaly_map, global_score, features, *raw)
        line_map = self.line(patches[0], patches[1], anomaly_map)
        return (anomaly_map, global_score, features, *raw, line_map)

    def output_names(self) -> list[str]:
        return (["anomaly_map", "global_score", "features"]
                + [f"{kind}_s{s}" for s in self.strides for kind in ("zero", "few")]
                + (["line_map"] if self.line is not None else []))


def export_onnx(graph: FrameGraph, input_names: Sequence[str], dim: int, grids: Sequence[tuple[int, int]]) -> bytes:
    """The graph as ONNX bytes (opset 17, dynamic batch), traced on a batch of two."""
    graph.eval()
    dummy = (torch.zeros(2, dim), *(torch.zeros(2, dim, h, w) for h, w in grids))
    names = list(input_names)
    outputs = graph.output_names()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it reads as constants: they are constant
        torch.onnx.export(graph, dummy, buf, dynamo=False, opset_version=OPSET,  # type: ignore[arg-type]
                          input_names=names, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in names + outputs})
    return buf.getvalue()


def reference_outputs(profile: LineProfile, text: TextBank, logit_scale: float,
                      embeddings: list[ImageEmbedding]) -> dict[str, np.ndarray]:
    """What the frame graph must return for these frames, by the numpy reference (edge.grounding)."""
    out: dict[str, list[np.ndarray]] = {}
    for emb in embeddings:
        raw = coarse_to_fine(raw_scores(emb, profile.bank, text.class_embeddings, logit_scale, profile.search_basis),
                             profile.patch_stats, profile.coarse_share)
        anomaly_map = smooth(combine(raw, profile.patch_stats, profile.weights))
        global_score = global_zero_shot_score(emb.global_, text.class_embeddings, logit_scale)
        values = {"anomaly_map": anomaly_map, "global_score": np.float32(global_score),
                  "features": frame_features(emb, anomaly_map, global_score)}
        for s in sorted(raw):
            values[f"zero_s{s}"] = raw[s]["zero"]
            values[f"few_s{s}"] = raw[s].get("few", np.zeros_like(raw[s]["zero"]))
        for k, v in values.items():
            out.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.stack(v) for k, v in out.items()}


def frame_graph_files(profile: LineProfile, pack: ModelPack, text: TextBank,
                      examples: list[ImageEmbedding]) -> FrameGraphFiles:
    """The profile's frame graph and its references, from a few encoded frames of the line (REFERENCE_IMAGES of
    them are kept; their tower outputs are stored as float16, and the references computed from exactly those
    values)."""
    strides = sorted(int(s) for s in pack.image["patch_strides"])
    names = [pack.image["outputs"]["embedding"]] + [pack.image["outputs"]["patches"][str(s)] for s in strides]
    h, w = (int(v) for v in pack.image["size"])
    line = LineModel.from_arrays(profile.line_model) if profile.line_model is not None else None
    if line is not None:
        line.eval()
    graph = FrameGraph(strides, text.class_embeddings, pack.logit_scale, profile.bank, profile.patch_stats,
                       profile.weights, line, profile.search_basis, profile.coarse_share)
    onnx = export_onnx(graph, names, pack.embedding_dim, [(h // s, w // s) for s in strides])
    offered = [o.astype(np.float16) for o in tower_outputs(examples[:REFERENCE_CANDIDATES])]
    rounded = [ImageEmbedding(offered[0][i].astype(np.float32),
                              {s: offered[1 + j][i].astype(np.float32).transpose(1, 2, 0) for j, s in
                               enumerate(strides)}) for i in range(offered[0].shape[0])]
    kept = reference_frames(profile, rounded)
    inputs = [o[kept] for o in offered]
    rounded = [rounded[i] for i in kept]
    reference = {f"in_{n}": a for n, a in zip(names, inputs, strict=True)}
    expected = reference_outputs(profile, text, pack.logit_scale, rounded)
    reference.update({f"out_{k}": v for k, v in expected.items()})
    if line is not None:  # the line model's own reference: torch on the same inputs and the reference map
        with torch.no_grad():
            reference["out_line_map"] = (line(
                torch.from_numpy(inputs[1].astype(np.float32)), torch.from_numpy(inputs[2].astype(np.float32)),
                torch.from_numpy(expected["anomaly_map"]))).numpy()
    # the product that chooses the patches searched stays float: in int8 a patch at the cut can change sides, and
    # its score jumps between the search's and the fill's
    choosing = {f"banks.{graph.coarse[1]}"} if graph.coarse is not None else set()
    return FrameGraphFiles(onnx, reference, names, int8=int8_search(onnx, keep_float=choosing))


def reference_frames(profile: LineProfile, frames: list[ImageEmbedding]) -> list[int]:
    """Which of the offered frames hold the graph's references: the first REFERENCE_IMAGES on which the subspace
    search has no near tie at its candidate cut (edge.fit.search.fragile_patches) — there ONNX Runtime's rounding
    could pick another last candidate than numpy and the version be refused at load for nothing; filled up with
    the first others where too few are free of one."""
    basis = {s: b for s, b in profile.search_basis.items() if s in profile.bank and profile.bank[s].size}
    steady = [i for i, frame in enumerate(frames)
              if not any(fragile_patches(frame.patches[s], profile.bank[s], b) for s, b in basis.items())
              and not coarse_tie(profile.bank, profile.search_basis, profile.coarse_share, frame)]
    others = [i for i in range(len(frames)) if i not in steady]
    return (steady + others)[:REFERENCE_IMAGES]


def coarse_tie(bank: dict[int, np.ndarray], basis: dict[int, np.ndarray], share: float | None,
               frame: ImageEmbedding) -> bool:
    """Whether a coarse-to-fine search's last patch searched and the first left out score within TIE_MARGIN of
    each other at the next stride: there ONNX Runtime's rounding could search the other one."""
    pair = coarse_to_fine_pair(s for s, b in bank.items() if b.size and s in frame.patches)
    if share is None or pair is None:
        return False
    fine, coarse = pair
    up, chosen = coarse_candidates(few_shot_scores(frame.patches[coarse], bank[coarse], basis.get(coarse)),
                                   frame.patches[fine].shape[:2], share)
    k = chosen.size
    if k >= up.size:
        return False
    ranked = np.sort(up)[::-1]
    return bool(ranked[k - 1] - ranked[k] < TIE_MARGIN)


def as_stored(frame: ImageEmbedding) -> ImageEmbedding:
    """The frame's tower outputs as a version stores them for its graph's references (float16)."""
    return ImageEmbedding(frame.global_.astype(np.float16).astype(np.float32),
                          {s: p.astype(np.float16).astype(np.float32) for s, p in frame.patches.items()})


def int8_search(onnx_bytes: bytes, keep_float: Collection[str] = ()) -> bytes | None:
    """The graph with its few-shot products (patches × memory bank) in int8 by ONNX Runtime's dynamic
    quantisation — the bank's int8 weights fixed here, each frame's patches quantised as it runs; every other
    operation, and the products with the banks named in `keep_float` (initializer names, `banks.<stride>`), stay
    float. None when the graph has no memory bank to quantise."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(onnx_bytes)
    banks = {i.name for i in model.graph.initializer if i.name.startswith("banks.")} - set(keep_float)
    products = [n.name for n in model.graph.node if n.op_type == "MatMul" and banks & set(n.input)]
    if not products:
        return None
    with tempfile.TemporaryDirectory(prefix="lineside-graph-") as tmp:
        out = Path(tmp) / "int8.onnx"
        # signed weights as the VNNI kernels take them; the float graph serves CPUs without VNNI
        quantize_dynamic(model, out, weight_type=QuantType.QInt8, nodes_to_quantize=products)
        return out.read_bytes()
