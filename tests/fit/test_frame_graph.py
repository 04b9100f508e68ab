"""The profile's frame graph: ONNX Runtime reproduces the numpy reference (edge.grounding) on real frames, batched as
one by one; a version whose graph or references were changed on disk is refused with one line; a profile without a
graph is refused by the inspector with what to run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.fit.frame_graph import reference_outputs
from edge.images import read_image
from edge.inspect.inspector import Inspector
from edge.profile.graph import FrameGraphFiles
from edge.profile.line_profile import ProfileError
from edge.profile.versions import current_version, load_profile
from edge.vlm.pack import load_pack
from tests.conftest import PACK


def _frames(textile_images: dict[str, Path], n: int) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(textile_images["frames"].iterdir())[::3][:n]]


def test_graph_outputs_equal_the_numpy_reference_on_real_frames(calibrated_profile: Path,
                                                                textile_images: dict[str, Path]) -> None:
    pack = load_pack(PACK)
    inspector = Inspector(pack, load_profile(calibrated_profile, pack_version=pack.version), "cpu")
    frames = _frames(textile_images, 5)
    outputs = inspector.image_encoder.run(np.stack([inspector.image_encoder.preprocess(f) for f in frames]))
    got = inspector.graph.run(outputs)
    want = reference_outputs(inspector.profile, inspector.text_bank, pack.logit_scale,
                             inspector.image_encoder.embeddings(outputs))
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-3, err_msg=name)  # z-scores of order 1
    # a batch decides as one frame at a time does
    batched = inspector.inspect_batch(frames)
    for frame, together in zip(frames, batched, strict=True):
        alone = inspector.inspect(frame)
        assert (alone.verdict, len(alone.regions)) == (together.verdict, len(together.regions))
        assert alone.anomaly_score == pytest.approx(together.anomaly_score, abs=1e-4)


def _copy(profile_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "profile"
    shutil.copytree(profile_dir, copy)
    return copy, copy / str(current_version(copy))


def test_a_changed_graph_file_is_refused_with_one_line(calibrated_profile: Path, tmp_path: Path) -> None:
    copy, vdir = _copy(calibrated_profile, tmp_path)
    data = bytearray((vdir / "frame.onnx").read_bytes())
    data[-100] ^= 0xFF
    (vdir / "frame.onnx").write_bytes(bytes(data))
    with pytest.raises(ProfileError, match=r"refused: frame.onnx: sha256 differs") as refused:
        load_profile(copy)
    assert "\n" not in str(refused.value)


def test_references_the_graph_does_not_reproduce_are_refused(calibrated_profile: Path, tmp_path: Path) -> None:
    """As if the graph had been exported wrongly: its files match their digests, its outputs do not match."""
    copy, vdir = _copy(calibrated_profile, tmp_path)
    spec = json.loads((vdir / "profile.json").read_text())
    graph = FrameGraphFiles.read(vdir, spec["graph"])
    graph.reference["out_anomaly_map"] = graph.reference["out_anomaly_map"] + 0.01
    data = json.loads((vdir / "profile.json").read_text())
    data["graph"] = graph.write(vdir)
    (vdir / "profile.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"output 'anomaly_map' differs from its reference by 0.01"):
        load_profile(copy)
    assert load_profile(copy, verify=False).graph is not None  # the digests alone still hold


def test_a_profile_without_a_graph_is_refused_by_the_inspector(calibrated_profile: Path, tmp_path: Path) -> None:
    copy, vdir = _copy(calibrated_profile, tmp_path)
    data = json.loads((vdir / "profile.json").read_text())
    data["graph"] = None
    (vdir / "profile.json").write_text(json.dumps(data))
    pack = load_pack(PACK)
    with pytest.raises(ProfileError, match="no frame graph .* run `lineside calibrate` again"):
        Inspector(pack, load_profile(copy, pack_version=pack.version), "cpu")
