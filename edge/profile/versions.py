"""Line-profile versions on disk: written side by side, `CURRENT` names the one in use, loaded with every part.

    <profile dir>/CURRENT          name of the version in use (replaced atomically)
    <profile dir>/v0001/profile.json   vocabulary, thresholds, good-score statistics, provenance
    <profile dir>/v0001/bank.npz       good-reference memory bank, one float16 array per patch stride
    <profile dir>/v0001/head.npz       classifier head (only when calibrated with labelled defects)
    <profile dir>/v0001/failure.npz    learned failure predictor (edge.uncertainty.failure), when there were errors
    <profile dir>/v0001/neighbours.npz labelled frames as neighbours (the failure predictor's neighbourhood inputs)
    <profile dir>/v0001/ood.npz        OoD references and threshold
    <profile dir>/v0001/rows.npz       the labelled frame rows everything above was fit on (`lineside train` adds to)
    <profile dir>/v0001/line_model.npz the line model's weights (edge.fit.line_model), when the line has one
    <profile dir>/v0001/frame.onnx     the frame graph: what the profile computes per frame (edge.profile.graph)
    <profile dir>/v0001/frame_int8.onnx  the same with int8 few-shot products (run on CPUs with VNNI)
    <profile dir>/v0001/frame_reference.npz  its reference inputs and outputs, checked at every load

A profile is fit with one model pack (its embeddings live in that pack's space); loading it with another pack is
refused with a message that says to calibrate again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge.durable import npz_bytes
from edge.grounding.classifier import LinearHead
from edge.profile.graph import GRAPH_FILE, INT8_FILE, FrameGraphFiles, GraphError
from edge.profile.line_profile import SEARCH_BASIS_FILE, LineProfile, ProfileError, RegionCut
from edge.profile.rows import LabelledRows
from edge.uncertainty.failure import FailurePredictor, NeighbourIndex, OodDetector
from edge.vlm.vocabulary import parse_vocabulary


def _next_version(directory: Path) -> str:
    existing = [int(p.name[1:]) for p in directory.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir()]
    return f"v{max(existing, default=0) + 1:04d}"


def save_profile(profile: LineProfile, directory: Path) -> str:
    """Write `profile` as the next version under `directory` and make it CURRENT; returns the version."""
    directory.mkdir(parents=True, exist_ok=True)
    profile.version = _next_version(directory)
    staging = directory / f".{profile.version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    data = profile.to_json()
    data["graph"] = profile.graph.write(staging) if profile.graph is not None else None
    (staging / "profile.json").write_text(json.dumps(data, indent=2))
    arrays: dict[str, Any] = {f"s{s}": b.astype(np.float16) for s, b in profile.bank.items()}
    np.savez(staging / "bank.npz", **arrays)
    if profile.search_basis:
        basis: dict[str, Any] = {f"s{s}": b for s, b in profile.search_basis.items()}
        np.savez(staging / SEARCH_BASIS_FILE, **basis)
    if profile.head is not None:
        profile.head.save(staging / "head.npz")
    if profile.failure is not None:
        profile.failure.save(staging / "failure.npz")
    if profile.neighbours is not None:
        profile.neighbours.save(staging / "neighbours.npz")
    if profile.ood is not None:
        profile.ood.save(staging / "ood.npz")
    if profile.rows is not None:
        profile.rows.save(staging / "rows.npz")
    if profile.line_model is not None:
        (staging / "line_model.npz").write_bytes(npz_bytes(profile.line_model))
    os.replace(staging, directory / profile.version)
    if profile.graph is not None:
        profile.graph.path = directory / profile.version / GRAPH_FILE
        if profile.graph.int8 is not None:
            profile.graph.int8_path = directory / profile.version / INT8_FILE
    tmp = directory / ".CURRENT.tmp"
    tmp.write_text(profile.version + "\n")
    os.replace(tmp, directory / "CURRENT")
    return profile.version


def current_version(directory: Path) -> str | None:
    try:
        return (directory / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def load_profile(directory: Path, pack_version: str | None = None, with_rows: bool = False,
                 verify: bool = True) -> LineProfile:
    """Load the CURRENT version; refuse one fit with another pack than `pack_version`, and one whose frame graph
    does not match its digests or (with `verify`) its reference outputs. The labelled rows (only `lineside train`
    needs them) are read with `with_rows`."""
    directory = Path(directory)
    version = current_version(directory)
    if version is None:
        raise ProfileError(f"line profile {directory}: no profile yet — run `lineside calibrate --good DIR` first")
    vdir = directory / version
    try:
        data = json.loads((vdir / "profile.json").read_text())
        with np.load(vdir / "bank.npz") as npz:
            bank = {int(k[1:]): npz[k].astype(np.float32) for k in npz.files}
        head = LinearHead.load(vdir / "head.npz") if data.get("head") else None
        failure = FailurePredictor.load(vdir / "failure.npz") if data.get("failure") else None
        neighbours = NeighbourIndex.load(vdir / "neighbours.npz") if data.get("neighbours") else None
        ood = OodDetector.load(vdir / "ood.npz") if data.get("ood") else None
        rows = LabelledRows.load(vdir / "rows.npz") if with_rows and data.get("rows") else None
        vocabulary = parse_vocabulary(data["vocabulary"], str(vdir / "profile.json"))
        graph = FrameGraphFiles.read(vdir, data["graph"]) if data.get("graph") else None
        region_cut = RegionCut.from_dict(data["region_cut"]) if data.get("region_cut") else None
        search_basis: dict[int, np.ndarray] = {}
        if data.get("search_basis"):
            with np.load(vdir / SEARCH_BASIS_FILE) as npz:
                search_basis = {int(k[1:]): npz[k].astype(np.float32) for k in npz.files}
        coarse_share = data.get("coarse_share")  # profiles from before searched every patch
        if coarse_share is not None and not 0 < float(coarse_share) <= 1:
            raise ValueError(f"coarse_share {coarse_share!r} is not in (0, 1]")
        line_model = None
        if data.get("line_model"):
            with np.load(vdir / "line_model.npz") as npz:
                line_model = {k: npz[k] for k in npz.files}
        if graph is not None and verify:
            graph.verify()
    except GraphError as exc:
        raise ProfileError(f"line profile {vdir}: refused: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:  # VocabularyError is a ValueError
        raise ProfileError(f"line profile {vdir}: unreadable: {exc}") from None
    if pack_version is not None and data["pack_version"] != pack_version:
        raise ProfileError(
            f"line profile {vdir} was fit with model pack {data['pack_version']} but the daemon runs "
            f"{pack_version}: run `lineside calibrate` again for this pack")
    return LineProfile(
        line_id=data["line_id"], version=data["version"], pack_version=data["pack_version"],
        vocabulary=vocabulary, bank=bank,
        patch_stats={int(s): {m: (float(v[0]), float(v[1])) for m, v in st.items()}
                     for s, st in data["patch_stats"].items()},
        anomaly_threshold=float(data["anomaly_threshold"]), anomaly_scale=float(data["anomaly_scale"]),
        weights=dict(data.get("weights", {"few": 0.5, "zero": 0.5})), metrics=dict(data.get("metrics", {})),
        created_wall=float(data.get("created_wall", 0.0)),
        frame_stats={k: (float(v[0]), float(v[1])) for k, v in (data.get("frame_stats") or {}).items()},
        frame_weights={k: float(v) for k, v in (data.get("frame_weights") or {}).items()},
        frame_threshold=None if data.get("frame_threshold") is None else float(data["frame_threshold"]),
        frame_scale=None if data.get("frame_scale") is None else float(data["frame_scale"]),
        head=head, use_head=bool((data.get("head") or {}).get("in_use", True)),
        failure=failure, neighbours=neighbours, ood=ood, routing=data.get("routing"), rows=rows,
        defect_rate=None if data.get("defect_rate") is None else float(data["defect_rate"]), graph=graph,
        region_cut=region_cut, line_model=line_model, search_basis=search_basis,
        coarse_share=None if coarse_share is None else float(coarse_share),
    )
