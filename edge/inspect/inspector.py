"""One frame's way through the models, top to bottom: encode → ground → caption → score.

`Inspector.inspect` takes a BGR frame and returns an `Inspection` (verdict, class scores, regions with captions,
p(wrong), OoD distance); it does no I/O and starts no thread. The tower and the profile's frame graph run on the
pack's provider (TensorRT ▸ CUDA ▸ CPU); what stays in numpy is cheap and per frame (decision, regions, captions,
p(wrong)). The daemon wires it to capture and routing
(edge.daemon); the evaluation, the benches and `lineside train` call it directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edge.config import LineConfig, TensorrtConfig
from edge.findings import Region
from edge.grounding.anomaly import RawScores
from edge.grounding.classifier import logit
from edge.grounding.regions import classify_embedding, find_regions
from edge.inspect.assess import assess_rows
from edge.profile.graph import GraphError
from edge.profile.line_profile import LineProfile, ProfileError, RegionCut
from edge.profile.versions import load_profile
from edge.uncertainty.score import Uncertainty, baseline_uncertainty, frame_class_scores
from edge.vlm.check import verify_pack
from edge.vlm.cpu import cpu_target
from edge.vlm.pack import ModelPack, load_pack
from edge.vlm.prompts import TextBank, build_text_bank
from edge.vlm.runtime import (
    GraphSession,
    ImageEmbedding,
    ImageEncoder,
    TextEncoder,
    channels_last,
    tower_outputs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inspection:
    """What the models say about one frame. `anomaly_score` / `anomaly_threshold` are the score the verdict was
    taken on: the head's logit p(defect) when the profile has a classifier head, else the fused frame score (or,
    for profiles without frame statistics, the anomaly map's maximum); `anomaly_map` is the map regions come from."""

    verdict: str
    class_scores: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    regions: list[Region]
    uncertainty: Uncertainty
    anomaly_map: np.ndarray = field(repr=False)
    raw_scores: RawScores | None = field(default=None, repr=False)  # per-stride zero-/few-shot patch scores
    embedding: np.ndarray | None = field(default=None, repr=False)  # the global embedding g (the station groups by it)
    # the map regions are cut from and the heat map shows: the anomaly map (z-scores), or the line model's defect
    # logit where the line's profile localises with it (`region_map_is_logit`)
    region_map: np.ndarray | None = field(default=None, repr=False)
    region_map_is_logit: bool = False


def choose_search(profile: LineProfile, wanted: str, on_cpu: bool) -> str:
    """Which of the profile's frame graphs runs: "int8" (its few-shot products in int8) or "float32". `wanted`
    "auto" takes int8 on the CPU provider of a CPU with VNNI (where its kernels are fast and never saturate) when the
    profile has that graph and it matches the references here — else float32, with a warning when the int8 graph
    drifts; "int8" insists (ProfileError when the profile has none or it drifts); "float32" never takes it."""
    graph = profile.graph
    assert graph is not None
    if wanted == "float32" or (wanted == "auto" and not (on_cpu and cpu_target() == "x86-vnni")):
        return "float32"
    if graph.int8 is None or graph.int8_path is None:
        if wanted == "int8":
            raise ProfileError(f"line profile {profile.describe()} has no int8 frame graph (made before they "
                               "existed, or without a memory bank): run `lineside calibrate` again, or set "
                               "line.model.search to auto")
        return "float32"
    try:
        graph.verify_int8()
    except GraphError as exc:
        if wanted == "int8":
            raise ProfileError(f"line profile {profile.describe()}: {exc}") from None
        log.warning("line profile %s: %s on this CPU; the float32 frame graph runs instead", profile.describe(), exc)
        return "float32"
    return "int8"


class Inspector:
    """Models for one line: the pack's encoders, the profile's vocabulary and its frame graph, all on the pack's
    provider. A frame is two provider calls: the image tower, then the profile's frame graph on its outputs
    (edge.fit.frame_graph); the decision, regions, captions and p(wrong) are numpy on the graph's outputs."""

    def __init__(self, pack: ModelPack, profile: LineProfile, provider: str = "auto",
                 intra_op_threads: int = 0, *, tensorrt: TensorrtConfig | None = None, device_id: int = 0,
                 search: str = "auto") -> None:
        if profile.graph is None or profile.graph.path is None:
            raise ProfileError(f"line profile {profile.describe()} has no frame graph on disk (made before frame "
                               "graphs existed): run `lineside calibrate` again")
        self.pack = pack
        self.profile = profile
        self.image_encoder = ImageEncoder(pack, provider, intra_op_threads, tensorrt=tensorrt, device_id=device_id)
        on_cpu = self.image_encoder.session.get_providers()[0] == "CPUExecutionProvider"
        self.search = choose_search(profile, search, on_cpu)
        log.info("line profile %s: the frame graph's few-shot search in %s", profile.describe(), self.search)
        path, digest = ((profile.graph.int8_path, profile.graph.int8_sha256) if self.search == "int8"
                        else (profile.graph.path, profile.graph.sha256))
        assert path is not None
        self.graph = GraphSession(path, digest, provider, intra_op_threads, tensorrt=tensorrt, device_id=device_id,
                                  per_frame=self.search == "int8")
        if self.graph.input_names != self.image_encoder.output_names:
            raise ProfileError(f"line profile {profile.describe()}: its frame graph takes "
                               f"{', '.join(self.graph.input_names)} but the pack's image tower gives "
                               f"{', '.join(self.image_encoder.output_names)}: run `lineside calibrate` again")
        text = TextEncoder(pack, provider, intra_op_threads, tensorrt=tensorrt, device_id=device_id)
        self.text_bank: TextBank = build_text_bank(profile.vocabulary, text)

    @property
    def versions(self) -> tuple[str, str]:
        return self.pack.version, self.profile.describe()

    def inspect(self, bgr: np.ndarray) -> Inspection:
        return self.inspect_batch([bgr])[0]

    def inspect_batch(self, images: list[np.ndarray]) -> list[Inspection]:
        """Frames through one tower run and one graph run (same results as one by one, faster per frame)."""
        batch = np.stack([self.image_encoder.preprocess(bgr) for bgr in images])
        return self.inspect_outputs(self.image_encoder.run(batch), images)

    def inspect_embedding(self, emb: ImageEmbedding, bgr: np.ndarray) -> Inspection:
        """One frame already encoded (the evaluation encodes a frame once and reuses it)."""
        return self.inspect_outputs(tower_outputs([emb]), [bgr])[0]

    def frame_rows(self, outputs: list[np.ndarray]) -> np.ndarray:
        """[N, F] labelled-row features of encoded frames under this profile (as `lineside calibrate` makes them)."""
        return self.graph.run(outputs)["features"]

    def frame_row(self, emb: ImageEmbedding) -> np.ndarray:
        return self.frame_rows(tower_outputs([emb]))[0]

    def inspect_outputs(self, outputs: list[np.ndarray], frames: list[np.ndarray]) -> list[Inspection]:
        """The rest of the frames' way once the tower has run: the frame graph, then each frame decided."""
        grounded = self.graph.run(outputs)
        return [self._decide(outputs, grounded, i, bgr) for i, bgr in enumerate(frames)]

    def _decide(self, outputs: list[np.ndarray], grounded: dict[str, np.ndarray], i: int, bgr: np.ndarray
                ) -> Inspection:
        profile, text, scale = self.profile, self.text_bank, self.pack.logit_scale
        height, width = bgr.shape[:2]
        anomaly_map = grounded["anomaly_map"][i]
        global_score = float(grounded["global_score"][i])
        row = grounded["features"][i:i + 1]
        raw: RawScores = {s: {"zero": grounded[f"zero_s{s}"][i], **({"few": grounded[f"few_s{s}"][i]}
                                                                    if s in profile.bank else {})}
                          for s in self.image_encoder.strides}
        map_max = float(anomaly_map.max())
        # decide good / defect: the line's classifier head if it has one, else the fused frame score
        if profile.head is not None and profile.use_head:
            p_defect = float(profile.head.predict(row)[0])
            score, threshold, spread = float(logit(p_defect)), float(logit(profile.head.threshold)), 1.0
        else:
            score, threshold, spread = profile.frame_score(map_max, global_score)
        is_defect = score > threshold
        # caption: the regions of a defect frame as the line's profile cuts them (above its level, or relative to
        # the frame's own map), each with class, place, size and best description. The patch grid is laid out
        # channels last only here.
        cut = profile.region_cut or RegionCut("map", profile.anomaly_threshold, None)
        region_map = cut.line_region_map(grounded["line_map"][i], anomaly_map) if cut.source == "line" else anomaly_map
        regions: list[Region] = []
        if is_defect:
            regions = find_regions(region_map, cut.threshold, channels_last(outputs[1][i]), width, height, text,
                                   scale, peak_fraction=cut.peak_fraction, relative=cut.relative, frame=bgr,
                                   contrast=cut.contrast, grow=cut.grow)
        # verdict: good or the defect class (from the strongest region, else from the whole frame)
        defect_probs = regions[0].class_probs if regions else classify_embedding(outputs[0][i], text, scale)
        class_scores = frame_class_scores(score, threshold, spread, defect_probs)
        verdict = max(defect_probs, key=defect_probs.__getitem__) if is_defect else "good"
        # score: how likely this decision is wrong (the line's learned failure predictor, else the baseline), and
        # whether the frame is like anything the line knows at all
        uncertainty = self.uncertainty(row, (score - threshold) / max(spread, 1e-6), class_scores, score, threshold,
                                       spread)
        return Inspection(verdict, class_scores, score, threshold, regions, uncertainty, anomaly_map, raw,
                          outputs[0][i], region_map, cut.source == "line")

    def uncertainty(self, row: np.ndarray, z: float, class_scores: dict[str, float], score: float,
                    threshold: float, spread: float) -> Uncertainty:
        """The baseline from the class scores; with a failure predictor or OoD detector, theirs from the frame's
        feature row [1, d]."""
        profile, text, scale = self.profile, self.text_bank, self.pack.logit_scale
        baseline = baseline_uncertainty(class_scores, score, threshold, spread)
        if profile.failure is None and profile.ood is None:
            return baseline
        assessed = assess_rows(profile, row, np.array([z]), text, scale, self.pack.embedding_dim)
        scores = {k: float(v[0]) for k, v in assessed.baselines.items()}
        value, source = baseline.value, baseline.source
        if assessed.p_wrong is not None:
            value, source = float(assessed.p_wrong[0]), "learned"
            scores["learned"] = value
        ood_distance = float(assessed.ood_distance[0]) if assessed.ood_distance is not None else 0.0
        is_ood = profile.ood is not None and ood_distance > profile.ood.threshold
        return Uncertainty(value, source, scores, ood_distance, is_ood,
                           profile.ood.threshold if profile.ood is not None else float("nan"))

    @property
    def review_threshold(self) -> float | None:
        """The profile's calibrated threshold on p(wrong) (risk or budget policy), when it has a predictor."""
        routing = self.profile.routing
        if self.profile.failure is None or not routing:
            return None
        return float(routing["threshold"])


def load_inspector(cfg: LineConfig) -> Inspector:
    pack = load_pack(cfg.model.pack)
    verify_pack(pack)  # schema, sha256s, ONNX names/shapes, reference outputs: a failing pack is refused here
    profile = load_profile(cfg.profile, pack_version=pack.version)
    return Inspector(pack, profile, cfg.model.provider, cfg.model.intra_op_threads, tensorrt=cfg.model.tensorrt,
                     device_id=cfg.model.device_id, search=cfg.model.search)
