"""The profile's frame graph: ONNX Runtime reproduces the numpy reference (edge.grounding) on real frames, batched as
one by one; a version whose graph or references were changed on disk is refused with one line; a profile without a
graph is refused by the inspector with what to run; the int8 search decides as the float one, and runs only where
it is fast and matches its references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.fit.frame_graph import REFERENCE_IMAGES, coarse_tie, reference_frames, reference_outputs
from edge.images import read_image
from edge.inspect import inspector as inspector_module
from edge.inspect.inspector import Inspector
from edge.profile.graph import INT8_ATOL, FrameGraphFiles, GraphError
from edge.profile.line_profile import LineProfile, ProfileError
from edge.profile.versions import current_version, load_profile
from edge.vlm.cpu import cpu_target
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEmbedding
from edge.vlm.vocabulary import load_vocabulary
from tests.conftest import PACK
from tests.fit.test_search import tie_in_the_subspace


def _frames(textile_images: dict[str, Path], n: int) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(textile_images["frames"].iterdir())[::3][:n]]


def test_graph_outputs_equal_the_numpy_reference_on_real_frames(calibrated_profile: Path,
                                                                textile_images: dict[str, Path]) -> None:
    pack = load_pack(PACK)
    inspector = Inspector(pack, load_profile(calibrated_profile, pack_version=pack.version), "cpu", search="float32")
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


@pytest.mark.skipif(cpu_target() != "x86-vnni", reason="the int8 search is made for VNNI kernels, which this CPU "
                    "lacks (its AVX2 kernels saturate; line.model.search: auto takes the float graph here)")
def test_the_int8_search_decides_as_the_float_one(calibrated_profile: Path, textile_images: dict[str, Path]) -> None:
    pack = load_pack(PACK)
    profile = load_profile(calibrated_profile, pack_version=pack.version)
    assert profile.graph is not None and profile.graph.int8 is not None
    as_float = Inspector(pack, profile, "cpu", search="float32")
    as_int8 = Inspector(pack, profile, "cpu", search="int8")
    assert (as_float.search, as_int8.search) == ("float32", "int8")
    frames = _frames(textile_images, 12)
    batched = as_int8.inspect_batch(frames)
    for frame, a, b in zip(frames, as_float.inspect_batch(frames), batched, strict=True):
        assert a.verdict == b.verdict
        assert np.abs(a.anomaly_map - b.anomaly_map).max() < INT8_ATOL
        assert a.anomaly_score == pytest.approx(b.anomaly_score, abs=INT8_ATOL)
        # each frame quantised on its own: a batch decides exactly as one frame at a time
        np.testing.assert_array_equal(as_int8.inspect(frame).anomaly_map, b.anomaly_map)


def test_auto_takes_int8_only_on_a_vnni_cpu_and_falls_back_when_it_drifts(
        calibrated_profile: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pack = load_pack(PACK)
    profile = load_profile(calibrated_profile, pack_version=pack.version)
    assert profile.graph is not None
    # the choice, not the kernels: the int8 graph matches its references here (it does on a VNNI CPU)
    monkeypatch.setattr(profile.graph, "verify_int8", lambda: None)
    monkeypatch.setattr(inspector_module, "cpu_target", lambda: "x86")  # AVX2 int8 kernels saturate
    assert inspector_module.choose_search(profile, "auto", on_cpu=True) == "float32"
    monkeypatch.setattr(inspector_module, "cpu_target", lambda: "x86-vnni")
    assert inspector_module.choose_search(profile, "auto", on_cpu=True) == "int8"
    assert inspector_module.choose_search(profile, "auto", on_cpu=False) == "float32"  # a GPU runs the float graph
    assert inspector_module.choose_search(profile, "float32", on_cpu=True) == "float32"

    def drifts() -> None:
        raise GraphError("frame_int8.onnx: output 'anomaly_map' differs from its reference by 0.3 (limit 0.1)")

    monkeypatch.setattr(profile.graph, "verify_int8", drifts)
    assert inspector_module.choose_search(profile, "auto", on_cpu=True) == "float32"
    assert "the float32 frame graph runs instead" in caplog.text
    with pytest.raises(ProfileError, match="differs from its reference"):
        inspector_module.choose_search(profile, "int8", on_cpu=True)


def test_a_changed_int8_graph_is_refused_with_one_line(calibrated_profile: Path, tmp_path: Path) -> None:
    copy, vdir = _copy(calibrated_profile, tmp_path)
    data = bytearray((vdir / "frame_int8.onnx").read_bytes())
    data[-100] ^= 0xFF
    (vdir / "frame_int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ProfileError, match=r"refused: frame_int8.onnx: sha256 differs"):
        load_profile(copy)


def test_references_are_frames_without_a_near_tie_in_the_subspace_search() -> None:
    """A frame on which numpy and ONNX Runtime could keep different last candidates of the subspace search would
    make its version's check fail at load for nothing: such frames are passed over for the references, and used
    only where too few others are offered."""
    patch, bank, basis = tie_in_the_subspace(0.0)
    profile = LineProfile(line_id="l", version="", pack_version="p", vocabulary=load_vocabulary(), bank={8: bank},
                          patch_stats={}, anomaly_threshold=0.0, anomaly_scale=1.0, search_basis={8: basis})
    fragile = ImageEmbedding(np.zeros(4, np.float32), {8: patch})
    steady = ImageEmbedding(np.zeros(4, np.float32), {8: np.eye(4, dtype=np.float32)[1][None, None]})
    assert REFERENCE_IMAGES == 2
    assert reference_frames(profile, [fragile, steady, fragile, steady]) == [1, 3]
    assert reference_frames(profile, [fragile, fragile, steady]) == [2, 0]
    profile.search_basis = {}  # the full search has no candidates' cut
    assert reference_frames(profile, [fragile, steady, fragile]) == [0, 1]


def test_references_are_frames_without_a_tie_at_the_coarse_to_fine_search_s_cut() -> None:
    """The same for a coarse-to-fine search: a frame whose last patch searched and first left out score alike at the
    next stride could be searched otherwise by ONNX Runtime, and is passed over for the references."""
    eye = np.eye(4, dtype=np.float32)
    bank = {8: eye[:1], 16: eye[:1]}
    profile = LineProfile(line_id="l", version="", pack_version="p", vocabulary=load_vocabulary(), bank=bank,
                          patch_stats={}, anomaly_threshold=0.0, anomaly_scale=1.0, coarse_share=0.25)
    fine = np.tile(eye[2], (2, 4, 1))

    def frame(right: np.ndarray) -> ImageEmbedding:  # a 1×2 coarse grid: its left patch the bank's, its right not
        return ImageEmbedding(np.zeros(4, np.float32), {8: fine, 16: np.stack([eye[0], right])[None]})

    tied, steady = frame(eye[0]), frame(eye[1])  # every coarse score alike / the right half searched (2 of 8)
    assert coarse_tie(bank, {}, 0.25, tied) and not coarse_tie(bank, {}, 0.25, steady)
    assert reference_frames(profile, [tied, steady, tied, steady]) == [1, 3]
    profile.coarse_share = None
    assert reference_frames(profile, [tied, steady]) == [0, 1]
