"""Execution providers from config: the TensorRT option mapping, the engine cache key, auto's fallback and an
explicit provider's refusal. This machine's onnxruntime offers only the CPU, so the TensorRT/CUDA side is tested
through the pure mapping and a session whose TensorRT provider ONNX Runtime drops (as it does on a broken GPU box);
no engine is built here."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from pydantic import ValidationError

from edge.config import ModelConfig, TensorrtConfig
from edge.vlm import runtime
from edge.vlm.pack import PackError, load_pack
from edge.vlm.runtime import (
    CPU,
    CUDA,
    TRT,
    ImageEncoder,
    TextEncoder,
    engine_cache_dir,
    make_session,
    precision_tag,
    provider_options,
    sanitise,
)

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "models" / "starter"
ALL = [TRT, CUDA, CPU]
SHA = "ab" * 32


def options(trt: TensorrtConfig | None = None, available: list[str] = ALL, provider: str = "auto",
            **kw: object) -> list[tuple[str, dict[str, str]]]:
    args: dict = {"pack_sha": SHA, "trt_version": "10.3.0", "gpu_name": "Orin", **kw}
    return provider_options(provider, trt, available, **args)


def test_every_tensorrt_field_maps_to_its_onnxruntime_option(tmp_path: Path) -> None:
    table = tmp_path / "calib.cache"
    trt = TensorrtConfig(
        fp16=True, int8=True, int8_calibration_table=table, int8_calibration_native=False, engine_cache=True,
        engine_cache_dir=tmp_path / "cache", timing_cache=True, max_workspace_bytes=1 << 30,
        profile_min_shapes="image:1x3x256x256", profile_opt_shapes={"image": "2x3x256x256"},
        profile_max_shapes={"image": [4, 3, 256, 256]}, dla_core=1)
    got = options(trt, device_id=1, input_names=["image"], calibration_sha="cd" * 32)
    assert [name for name, _ in got] == [TRT, CUDA, CPU]
    key = tmp_path / "cache" / SHA / f"trt10.3.0_Orin_int8-fp16_dla1_cal{'cd' * 6}"
    assert got[0][1] == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_int8_enable": "True",
        "trt_int8_calibration_table_name": str(table.resolve()),
        "trt_int8_use_native_calibration_table": "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(key),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path / "cache" / "timing" / "trt10.3.0_Orin"),
        "trt_max_workspace_size": str(1 << 30),
        "trt_profile_min_shapes": "image:1x3x256x256",
        "trt_profile_opt_shapes": "image:2x3x256x256",
        "trt_profile_max_shapes": "image:4x3x256x256",
        "trt_dla_enable": "True",
        "trt_dla_core": "1",
    }
    assert got[1] == (CUDA, {"device_id": "1"})
    assert got[2] == (CPU, {})


def test_defaults_map_to_fp32_with_engine_and_timing_cache() -> None:
    (trt, opts), cuda, cpu = options()
    assert trt == TRT and cuda == (CUDA, {"device_id": "0"}) and cpu == (CPU, {})
    assert opts["trt_fp16_enable"] == opts["trt_int8_enable"] == "False"
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(Path("var/trt-cache") / SHA / "trt10.3.0_Orin_fp32")
    for absent in ("trt_int8_calibration_table_name", "trt_max_workspace_size", "trt_profile_min_shapes",
                   "trt_dla_enable", "trt_dla_core"):
        assert absent not in opts
    off = options(TensorrtConfig(engine_cache=False, timing_cache=False))[0][1]
    assert off["trt_engine_cache_enable"] == off["trt_timing_cache_enable"] == "False"
    assert "trt_engine_cache_path" not in off and "trt_timing_cache_path" not in off


def test_profile_shapes_keep_to_the_inputs_each_model_has() -> None:
    shapes = {f"profile_{k}_shapes": f"image:{n}x3x256x256,input_ids:{n}x32,attention_mask:{n}x32"
              for k, n in (("min", 1), ("opt", 2), ("max", 8))}
    trt = TensorrtConfig(**shapes)
    image = options(trt, input_names=["image"])[0][1]
    text = options(trt, input_names=["input_ids", "attention_mask"])[0][1]
    assert image["trt_profile_max_shapes"] == "image:8x3x256x256"
    assert text["trt_profile_opt_shapes"] == "input_ids:2x32,attention_mask:2x32"
    # a model none of whose inputs has a profile gets no profile options (TensorRT then infers the ranges)
    assert "trt_profile_min_shapes" not in options(trt, input_names=["pixel_values"])[0][1]


def test_config_refuses_half_a_profile_a_stray_table_and_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        TensorrtConfig(profile_min_shapes="image:1x3x8x8")
    with pytest.raises(ValidationError, match="int8 is false"):
        TensorrtConfig(int8_calibration_table=tmp_path / "t.cache")
    with pytest.raises(ValidationError, match="1x3x256x256"):
        TensorrtConfig(profile_min_shapes="image:1xAx8", profile_opt_shapes="image:1x3", profile_max_shapes="i:1")
    with pytest.raises(ValidationError, match="positive"):
        TensorrtConfig(profile_min_shapes={"image": [0, 3]}, profile_opt_shapes="image:1x3",
                       profile_max_shapes="image:1x3")
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig.model_validate({"tensorrt": {"fp61": True}})
    cfg = ModelConfig.model_validate({"provider": "tensorrt", "device_id": 1,
                                      "tensorrt": {"fp16": True, "dla_core": 0}})
    assert cfg.tensorrt.fp16 and cfg.tensorrt.dla_core == 0 and cfg.device_id == 1


def test_engine_cache_key_changes_with_pack_tensorrt_gpu_and_precision() -> None:
    root = Path("var/trt-cache")
    base = engine_cache_dir(root, SHA, "10.3.0", "Orin")
    assert base == root / SHA / "trt10.3.0_Orin_fp32"
    assert engine_cache_dir(root, "cd" * 32, "10.3.0", "Orin") != base
    assert engine_cache_dir(root, SHA, "10.4.0", "Orin") != base
    assert engine_cache_dir(root, SHA, "10.3.0", "NVIDIA GeForce RTX 4090") == \
        root / SHA / "trt10.3.0_NVIDIA-GeForce-RTX-4090_fp32"
    paths = {options(TensorrtConfig(), **kw)[0][1]["trt_engine_cache_path"]
             for kw in ({}, {"pack_sha": "cd" * 32}, {"trt_version": "8.6.2"}, {"gpu_name": "H100 80GB HBM3"})}
    assert len(paths) == 4
    tags = {precision_tag(TensorrtConfig(**kw)) for kw in ({}, {"fp16": True}, {"int8": True},
                                                             {"int8": True, "fp16": True}, {"dla_core": 0})}
    assert len(tags) == 5
    assert sanitise("../../etc passwd") == "etc-passwd"  # a GPU name never escapes the cache folder


def test_unknown_tensorrt_version_or_gpu_turns_the_engine_cache_off() -> None:
    for kw in ({"trt_version": None}, {"gpu_name": None}):
        opts = options(TensorrtConfig(), **kw)[0][1]
        assert opts["trt_engine_cache_enable"] == "False" and "trt_engine_cache_path" not in opts
        assert opts["trt_timing_cache_enable"] == "False"


def test_auto_takes_the_best_offered_and_cpu_last() -> None:
    assert options(available=[CPU]) == [(CPU, {})]
    assert options(available=["AzureExecutionProvider", CPU]) == [(CPU, {})]
    assert [n for n, _ in options(available=[CUDA, CPU])] == [CUDA, CPU]
    assert [n for n, _ in options(provider="cuda")] == [CUDA, CPU]  # explicit cuda never adds TensorRT
    assert options(provider="cpu") == [(CPU, {})]


def test_explicit_provider_not_offered_is_one_line_pack_error() -> None:
    with pytest.raises(PackError, match="provider 'tensorrt' is not available here") as err:
        options(provider="tensorrt", available=[CPU])
    assert "\n" not in str(err.value)


def test_real_onnxruntime_here_auto_runs_on_cpu_and_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    assert TRT not in ort.get_available_providers()  # the premise of this file
    pack = load_pack(PACK)
    with caplog.at_level(logging.INFO, logger="edge.vlm.runtime"):
        encoder = ImageEncoder(pack, "auto")
    assert encoder.session.get_providers()[0] == CPU
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.vlm.runtime"]
    assert len(lines) == 1
    assert "image.onnx runs on CPUExecutionProvider" in lines[0] and "not offered here" in lines[0]


def test_real_onnxruntime_here_refuses_explicit_tensorrt_and_cuda() -> None:
    pack = load_pack(PACK)
    for provider, encoder in (("tensorrt", ImageEncoder), ("cuda", TextEncoder)):
        with pytest.raises(PackError, match=f"provider '{provider}' is not available here") as err:
            encoder(pack, provider)
        assert "\n" not in str(err.value) and "onnx" in str(err.value)


BROKEN_TRT = pytest.mark.filterwarnings("ignore:Specified provider 'TensorrtExecutionProvider'")


@pytest.fixture
def tensorrt_offered_but_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a GPU box with a broken CUDA/TensorRT install looks like: onnxruntime lists the TensorRT provider, but
    the real session cannot start it and carries on with the next one (here the CPU)."""
    real = ort.get_available_providers()
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [TRT, *real])
    monkeypatch.setattr(runtime, "tensorrt_version", lambda: "10.3.0")
    monkeypatch.setattr(runtime, "gpu_name", lambda device_id=0: "Orin")


@BROKEN_TRT
@pytest.mark.usefixtures("tensorrt_offered_but_broken")
def test_auto_falls_back_when_tensorrt_does_not_start_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trt = TensorrtConfig(engine_cache_dir=tmp_path / "cache", fp16=True)
    with caplog.at_level(logging.INFO, logger="edge.vlm.runtime"):
        session = make_session(str(PACK / "image.onnx"), "auto", tensorrt=trt)
    assert session.get_providers()[0] == CPU
    lines = [r for r in caplog.records if r.name == "edge.vlm.runtime"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "runs on CPUExecutionProvider (fallback: auto chose TensorrtExecutionProvider" in lines[0].getMessage()
    manifest_sha = load_pack(PACK).manifest["files"]["image.onnx"]
    assert (tmp_path / "cache" / manifest_sha / "trt10.3.0_Orin_fp16").is_dir()  # keyed by the ONNX file's sha256


@BROKEN_TRT
@pytest.mark.usefixtures("tensorrt_offered_but_broken")
def test_explicit_tensorrt_that_does_not_start_refuses_the_pack(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="could not start TensorrtExecutionProvider") as err:
        make_session(str(PACK / "image.onnx"), "tensorrt", tensorrt=TensorrtConfig(engine_cache_dir=tmp_path))
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("tensorrt_offered_but_broken")
def test_missing_int8_calibration_table_is_a_pack_error(tmp_path: Path) -> None:
    trt = TensorrtConfig(int8=True, int8_calibration_table=tmp_path / "nope.cache", engine_cache_dir=tmp_path)
    with pytest.raises(PackError, match="calibration table .*nope.cache does not exist"):
        make_session(str(PACK / "image.onnx"), "auto", tensorrt=trt)


def test_cpu_pool_spins_within_a_run_and_stops_when_it_returns() -> None:
    """Spinning between a run's nodes (the int8 tower's speed) but not after it, where the grounding's BLAS runs."""
    config = make_session(str(PACK / "image.onnx"), "cpu", quiet=True).get_session_options()
    assert config.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert config.get_session_config_entry("session.force_spinning_stop") == "1"


BUILD = [sys.executable, str(REPO / "deploy" / "tensorrt" / "build_engines.py")]


def test_build_engines_help_runs_without_tensorrt() -> None:
    done = subprocess.run([*BUILD, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--int8" in done.stdout and "--images" in done.stdout


def test_build_engines_without_tensorrt_fails_with_one_line() -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    done = subprocess.run([*BUILD, "--pack", str(PACK), "--fp16"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("error: the tensorrt Python package is not installed")
