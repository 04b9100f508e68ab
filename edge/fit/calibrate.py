"""`lineside calibrate`: fit a line profile from good images (and, optionally, labelled defect images).

Every image is encoded once. The good images (the first MAX_BANK_IMAGES, shuffled with the seed) feed the memory
bank (greedy k-centre coreset per stride, as in PatchCore); with `search_subspace`, searched in the fewest
dimensions that reproduce the full search on the line's own images (edge.fit.search). What "good" looks like in
numbers — the mean and spread of every patch score (to put zero- and few-shot scores on one scale), of the map's
maximum and of the global zero-shot score (to fuse them into the frame score), and of the frame score, whose upper
tail gives the threshold — is learnt from *cross-fitted* scores: the bank images fall into CROSS_FIT_FOLDS folds and
each is scored against a bank built without its fold, as is every other image (good beyond the bank's share,
labelled defects), round-robin. So every good image is both in the bank and a held-out row, and good and defect rows
see banks of the same size. With defect images the thresholds are instead the ones that best separate the good rows
from the defects, and a classifier head (edge.grounding.classifier) is fit on them; it decides the verdict where its
out-of-fold accuracy is at least the fused score's. The rows are kept as labelled rows, from which edge.fit.refit
also fits the failure predictor, the routing threshold and the OoD detector (and `lineside train` adds to them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import ImageLimits
from edge.fit.classifier import best_threshold
from edge.fit.frame_graph import REFERENCE_CANDIDATES, REFERENCE_IMAGES, as_stored, coarse_tie, frame_graph_files
from edge.fit.line_model import LineSample, tower_grids
from edge.fit.localiser import fit_localiser
from edge.fit.refit import RoutingSpec, refit, routing_of
from edge.fit.regions import PastedDefect
from edge.fit.search import choose_search_dims, search_basis
from edge.fit.synthetic import FIT_KINDS, fit_defect
from edge.grounding.anomaly import (
    RawScores,
    SearchBasis,
    coarse_to_fine,
    combine,
    global_zero_shot_score,
    raw_scores,
    smooth,
)
from edge.grounding.classifier import frame_features
from edge.grounding.regions import grey
from edge.images import ImageError, read_image
from edge.profile.line_profile import LineProfile, ProfileError
from edge.profile.rows import LabelledRows
from edge.profile.versions import current_version, load_profile, save_profile
from edge.progress import Progress, silent
from edge.vlm.pack import ModelPack
from edge.vlm.prompts import TextBank, build_text_bank
from edge.vlm.runtime import ImageEmbedding, ImageEncoder, TextEncoder, tower_outputs
from edge.vlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)
# of the finest stride's patches, a coarse-to-fine search compares with the bank: the smallest of 1/32, 1/16, 1/8,
# 1/4 that changed at most 0.1 % of the decisions on ELPV's fit split (seed 0, 1,970 cells, the evaluation profile's
# head: 7 / 5 / 2 / 0 changed; README "Coarse-to-fine search, measured")
COARSE_TO_FINE_SHARE = 0.125
MAX_BANK_IMAGES = 40  # more good images than this go to the good-image statistics (and the head), not the bank
CROSS_FIT_FOLDS = 3
DEFAULT_BANK_SIZE = {8: 2048, 16: 1024}
REGION_DEFECTS = 40  # bank images that get synthetic defects pasted in (PASTED_PER_IMAGE each)
PASTED_PER_IMAGE = 2
SEARCH_PROBES_PER_FOLD = 3  # bank images per fold whose patches measure the projected search against the full one


@dataclass(frozen=True)
class LineSettings:
    """What a line engineer told the current version about the line rather than about its images: how to route,
    the share of defective parts the line makes, and the cheaper few-shot searches asked for because the line's
    CPU could not keep up (`search_subspace`, `coarse_to_fine`). A new calibration keeps them unless told
    otherwise."""

    version: str
    routing: RoutingSpec
    defect_rate: float | None
    search_subspace: bool = False
    coarse_to_fine: bool = False


def current_settings(profile_dir: Path) -> LineSettings | None:
    """The current version's LineSettings; None for a new line, or one whose current version cannot be read (a
    calibration is how such a line recovers, from the defaults)."""
    if current_version(profile_dir) is None:
        return None
    try:
        current = load_profile(profile_dir, verify=False)
    except ProfileError as exc:
        log.warning("%s: calibrating from the default routing and no defect rate", exc)
        return None
    # asked for even where calibrate then kept the full search (the metrics say so); `train` keeps both as they are
    return LineSettings(current.version, routing_of(current), current.defect_rate,
                        search_subspace=bool(current.search_basis) or "search_dims" in current.metrics,
                        coarse_to_fine=current.coarse_share is not None or "coarse_to_fine" in current.metrics)


def coreset(features: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Greedy k-centre subsample (PatchCore); distances on a 64-d random projection to keep it fast, squared and
    expanded (‖x‖² − 2x·c + ‖c‖²) so that each step is one matrix–vector product, not a new [N, 64] difference
    array (calibration builds a bank per cross-fitting fold)."""
    if features.shape[0] <= size:
        return features
    rng = np.random.default_rng(seed)
    proj = features @ rng.standard_normal((features.shape[1], 64)).astype(np.float32)
    norms = np.einsum("ij,ij->i", proj, proj)
    chosen = [int(rng.integers(features.shape[0]))]
    dist = norms - 2 * (proj @ proj[chosen[0]]) + norms[chosen[0]]
    for _ in range(size - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        np.minimum(dist, norms - 2 * (proj @ proj[nxt]) + norms[nxt], out=dist)
    return features[np.asarray(chosen)]



@dataclass
class _Scored:
    """What calibration keeps of one encoded image: its raw patch scores and a compact embedding (g and the mean
    patch embedding per stride as 1×1 grids — all the classifier head's features need), not the full patch grids."""

    raw: RawScores
    compact: ImageEmbedding
    global_score: float


def _compact(emb: ImageEmbedding) -> ImageEmbedding:
    return ImageEmbedding(emb.global_, {s: p.reshape(-1, p.shape[-1]).mean(axis=0)[None, None] for s, p in
                                        emb.patches.items()})


def calibrate(pack: ModelPack, vocabulary: Vocabulary, good: list[Path], line_id: str, profile_dir: Path,
              defects: list[Path] | None = None, bank_size: dict[int, int] | None = None, sigmas: float = 3.0,
              provider: str = "auto", progress: Progress = silent, seed: int = 0,
              max_bank_images: int = MAX_BANK_IMAGES, global_weight: float = 1.0,
              fit_classifier: bool = True, weights: dict[str, float] | None = None,
              routing: RoutingSpec | None = None, defect_rate: float | None = None,
              limits: ImageLimits | None = None, region_defects: int = REGION_DEFECTS,
              search_subspace: bool = False, coarse_to_fine_search: bool = False) -> LineProfile:
    """Fit and save a new profile version; returns it. `defect_rate`: the share of defective parts the line
    makes, if known — the good/defect thresholds then maximise accuracy at that rate (else balanced accuracy).
    `limits`: the line's image bounds (line.images); a file beyond them is skipped with one line.
    `region_defects`: how many bank images get a synthetic defect pasted in to fit how regions are cut (0: none,
    the calibrated threshold cuts them). `search_subspace`: the few-shot search in the smallest subspace measured to
    reproduce the full search on these images, where one does (edge.fit.search); else in all dimensions.
    `coarse_to_fine_search`: the finest stride searched only at COARSE_TO_FINE_SHARE of its patches, where the next
    stride's few-shot score is highest (edge.grounding.anomaly.coarse_to_fine); else at every patch."""
    if len(good) < 3:
        raise ProfileError(f"calibration needs at least 3 good images, got {len(good)}")
    if defect_rate is not None and not 0.0 < defect_rate < 1.0:
        raise ProfileError(f"the line's defect rate must be between 0 and 1 (exclusive), got {defect_rate}")
    started = time.monotonic()
    encoder = ImageEncoder(pack, provider)
    text = build_text_bank(vocabulary, TextEncoder(pack, provider))
    scale = pack.logit_scale
    bank_size = bank_size or dict(DEFAULT_BANK_SIZE)

    order = np.random.default_rng(seed).permutation(len(good))
    n_bank = min(len(good), max_bank_images)
    bank_files = [good[i] for i in order[:n_bank]]
    other_good = [good[i] for i in order[n_bank:]]

    unreadable: list[str] = []

    def embed(files: list[Path], label: str) -> Iterator[ImageEmbedding]:
        n = 0
        for path in progress(files, label):
            try:
                emb = encoder.encode(read_image(path, limits))
            except ImageError as exc:  # one bad file must not spoil a line setup: say so, count it, go on
                log.error("%s (skipped)", exc)
                unreadable.append(str(path))
                continue
            n += 1
            yield emb
        if not n:
            raise ProfileError(f"calibration: none of the {len(files)} {label} images could be read")

    bank_embs = list(embed(bank_files, "good images (bank)"))
    folds = np.arange(len(bank_embs)) % min(CROSS_FIT_FOLDS, len(bank_embs))
    n_folds = int(folds.max()) + 1

    def bank_of(members: list[ImageEmbedding]) -> dict[int, np.ndarray]:
        return {stride: coreset(np.concatenate([e.patches[stride].reshape(-1, pack.embedding_dim) for e in members]),
                                bank_size.get(stride, 1024), seed) for stride in encoder.strides}

    bank = bank_of(bank_embs)
    # one fold alone (fewer than 2 bank images) has no bank without it: it is scored against the whole bank
    fold_banks = [bank_of([e for e, f in zip(bank_embs, folds, strict=True) if f != k]) if n_folds > 1 else bank
                  for k in range(n_folds)]
    search_dims, search_measured = _search_dims(bank_embs, folds, fold_banks, pack.embedding_dim) \
        if search_subspace else ({}, {})
    basis = {s: search_basis(bank[s], k) for s, k in search_dims.items()}
    fold_bases = [{s: search_basis(b[s], k) for s, k in search_dims.items()} for b in fold_banks]

    def score(e: ImageEmbedding, fold: int) -> _Scored:
        return _Scored(raw_scores(e, fold_banks[fold], text.class_embeddings, scale, fold_bases[fold]), _compact(e),
                       global_zero_shot_score(e.global_, text.class_embeddings, scale))

    def scored(files: list[Path], label: str) -> list[_Scored]:
        return [score(e, i % n_folds) for i, e in enumerate(embed(files, label))]

    holdout = [score(e, int(f)) for e, f in zip(bank_embs, folds, strict=True)]
    n_bank_images = len(bank_embs)
    bank_read = [p for p in bank_files if str(p) not in unreadable]  # the files of bank_embs, in their order
    examples = bank_embs[:REFERENCE_CANDIDATES]  # the frame graph's reference inputs are chosen from these
    # the bank images' patch grids as the tower gave them (float16): the line model's good examples
    clean_towers = [t for e in bank_embs[:region_defects] if (t := _tower(e)) is not None]
    del bank_embs
    if other_good:
        holdout += scored(other_good, "good images")
    raws = [h.raw for h in holdout]
    coarse_share = COARSE_TO_FINE_SHARE if coarse_to_fine_search else None
    if coarse_share is not None and sum(not coarse_tie(bank, basis, coarse_share, as_stored(e))
                                        for e in examples) < REFERENCE_IMAGES:
        # the graph's references would tie at the search's cut (a bank holding every patch of its images: they
        # score 0 everywhere), and ONNX Runtime need not search the patches numpy does: the full search
        coarse_share = None
        log.warning("line %s: the coarse-to-fine search is not used: the bank images tie at its cut", line_id)
    patch_stats = {
        stride: {mode: (float(np.mean([r[stride][mode] for r in raws])),
                        float(np.std([r[stride][mode] for r in raws])))
                 for mode in raws[0][stride]}
        for stride in raws[0]
    }
    weights = dict(weights or {"few": 0.5, "zero": 0.5})
    # the statistics are the full search's (the scores a coarse-to-fine search keeps are the full search's own)
    good_maps = [smooth(combine(coarse_to_fine(r, patch_stats, coarse_share), patch_stats, weights)) for r in raws]
    good_scores = np.array([float(m.max()) for m in good_maps])
    good_global = np.array([h.global_score for h in holdout])
    spread = float(max(good_scores.std(), 0.25))
    threshold = float(good_scores.mean() + sigmas * spread)
    profile = LineProfile(line_id=line_id, version="", pack_version=pack.version, vocabulary=vocabulary,
                          bank=bank, patch_stats=patch_stats, anomaly_threshold=threshold, anomaly_scale=spread,
                          weights=weights, search_basis=basis, coarse_share=coarse_share,
                          frame_stats={"map": (float(good_scores.mean()), float(max(good_scores.std(), 1e-3))),
                                       "global": (float(good_global.mean()), float(max(good_global.std(), 1e-3)))},
                          frame_weights={"map": 1.0, "global": global_weight}, defect_rate=defect_rate)
    good_frame = np.array([profile.fused_score(m, g) for m, g in zip(good_scores, good_global, strict=True)])
    profile.frame_scale = float(max(good_frame.std(), 0.25))
    profile.frame_threshold = float(good_frame.mean() + sigmas * profile.frame_scale)
    metrics: dict[str, object] = {"good_images": len(good), "bank_images": n_bank_images,
                                  "holdout_images": len(holdout), "cross_fit_folds": n_folds,
                                  "holdout_good_score_mean": float(good_scores.mean()),
                                  "holdout_good_score_max": float(good_scores.max()),
                                  "unreadable_images": unreadable}
    if coarse_to_fine_search:
        metrics["coarse_to_fine"] = (f"the finest stride searched at {coarse_share:g} of its patches"
                                     if coarse_share is not None else "not used: the bank images tie at its cut")
    if search_subspace:
        metrics.update(search_dims={str(s): int(b.shape[0]) for s, b in basis.items()},
                       search_agreement=search_measured)
    holdout_rows = [frame_features(h.compact, m, h.global_score) for h, m in zip(holdout, good_maps, strict=True)]
    rows = LabelledRows(np.stack(holdout_rows), np.zeros(len(holdout), np.int64))
    if defects:
        bad = scored(defects, "defects")
        bad_maps = [smooth(combine(coarse_to_fine(b.raw, patch_stats, coarse_share), patch_stats, weights))
                    for b in bad]
        defect_scores = np.array([float(m.max()) for m in bad_maps])
        profile.anomaly_threshold, _ = best_threshold(good_scores, defect_scores)
        metrics["defect_images"] = len(defects)
        rows = rows.extend(LabelledRows(
            np.stack([frame_features(b.compact, m, b.global_score) for b, m in zip(bad, bad_maps, strict=True)]),
            np.ones(len(bad), np.int64)))
    # where regions come from and how they are cut: synthetic defects pasted on the bank images, each scored
    # without its own fold, teach the line model and choose between its map and the anomaly map
    if region_defects:
        pasted = _pasted_defects(bank_read[:region_defects], folds, fold_banks, fold_bases, encoder, text, scale,
                                 profile, progress, limits, seed)
        clean = [LineSample(s8, s16, good_maps[i], np.zeros_like(good_maps[i]), np.ones_like(good_maps[i]))
                 for i, (s8, s16) in enumerate(clean_towers)]
        line, profile.region_cut, measured = fit_localiser(pasted, clean, profile.anomaly_threshold, seed)
        profile.line_model = line.state_arrays() if line is not None else None
        metrics.update(measured)
    # thresholds, classifier head, failure predictor, routing threshold and OoD detector from the labelled rows
    read = [str(p) for p in other_good + (defects or []) if str(p) not in unreadable]  # the rows' files, in order
    fitted = refit(profile, rows, text, scale, pack.embedding_dim, routing, seed=seed, fit_classifier=fit_classifier,
                   row_names=[str(p) for p in bank_read] + read)
    if "fused_balanced_accuracy" in fitted:
        fitted["holdout_balanced_accuracy"] = fitted["fused_balanced_accuracy"]
    metrics.update(fitted)
    profile.rows = rows
    profile.graph = frame_graph_files(profile, pack, text, examples)
    metrics["seconds"] = round(time.monotonic() - started, 1)
    profile.metrics = metrics
    save_profile(profile, profile_dir)
    log.info("line %s: profile %s saved in %s (%.1f s)", line_id, profile.version, profile_dir,
             metrics["seconds"])
    return profile


def _pasted_defects(files: list[Path], folds: np.ndarray, fold_banks: list[dict[int, np.ndarray]],
                    fold_bases: list[SearchBasis], encoder: ImageEncoder, text: TextBank, scale: float,
                    profile: LineProfile, progress: Progress, limits: ImageLimits | None, seed: int
                    ) -> list[PastedDefect]:
    """PASTED_PER_IMAGE synthetic defects (edge.fit.synthetic) on each of `files` — the first bank images, fold k
    at index k — and the anomaly map of each result, scored against the bank built without the image's fold."""
    rng = np.random.default_rng(seed)
    images = []
    for path in files:
        try:
            images.append(read_image(path, limits))
        except ImageError:  # counted when the bank was read
            continue
    out = []
    for i, image in enumerate(progress(images, "synthetic defects (line model, region cut)")):
        for k in range(PASTED_PER_IMAGE):
            kind = FIT_KINDS[(i + k) % len(FIT_KINDS)]
            defect = fit_defect(image, images[(i + 1 + k) % len(images)], kind, rng)
            emb = encoder.encode(defect.image)
            fold = int(folds[i]) % len(fold_banks)
            raw = coarse_to_fine(raw_scores(emb, fold_banks[fold], text.class_embeddings, scale, fold_bases[fold]),
                                 profile.patch_stats, profile.coarse_share)
            out.append(PastedDefect(smooth(combine(raw, profile.patch_stats, profile.weights)), defect.mask,
                                    image.shape[1], image.shape[0], _tower(emb), source=i,
                                    image=grey(defect.image), kind=kind))
    return out


def _search_dims(bank_embs: list[ImageEmbedding], folds: np.ndarray, fold_banks: list[dict[int, np.ndarray]],
                 dim: int) -> tuple[dict[int, int], dict[str, dict[str, float]]]:
    """Per stride, the subspace the few-shot search runs in (edge.fit.search), measured on up to
    SEARCH_PROBES_PER_FOLD bank images of each fold against the bank built without them; and what was measured."""
    dims: dict[int, int] = {}
    measured: dict[str, dict[str, float]] = {}
    for stride in fold_banks[0]:
        probes = [(fold_bank[stride], [e.patches[stride] for e, f in zip(bank_embs, folds, strict=True)
                                       if f == k][:SEARCH_PROBES_PER_FOLD])
                  for k, fold_bank in enumerate(fold_banks)]
        k, measured[str(stride)] = choose_search_dims([p for p in probes if p[1]], dim)
        if k is not None:
            dims[stride] = k
    return dims, measured


def _tower(emb: ImageEmbedding) -> tuple[np.ndarray, np.ndarray] | None:
    """The line model's patch grids of an encoded frame (edge.fit.line_model.tower_grids); None with one grid."""
    return tower_grids(tower_outputs([emb]))
