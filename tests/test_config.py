from pathlib import Path

import pytest
import yaml

from edge.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal() -> dict:
    return {"line": {"id": "l1", "source": {"kind": "folder", "path": "frames"}}}


def test_repository_config_is_valid() -> None:
    cfg = load_config(REPO / "config.yaml", env={})
    assert cfg.line.source.kind == "folder"
    assert cfg.station.http_host == "127.0.0.1"


def test_misspelt_key_names_its_path_and_the_file(tmp_path: Path) -> None:
    data = _minimal()
    data["line"]["source"]["fpss"] = 5
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert str(path) in message and "line.source.fpss" in message and "unknown key" in message
    assert "\n" not in message


def test_wrong_value_names_key(tmp_path: Path) -> None:
    data = _minimal()
    data["line"]["routing"] = {"review_threshold": 3}
    with pytest.raises(ConfigError, match=r"line\.routing\.review_threshold"):
        load_config(_write(tmp_path, data), env={})


def test_source_kind_needs_its_address() -> None:
    with pytest.raises(ConfigError, match="source kind 'rtsp' needs 'url'"):
        parse_config({"line": {"source": {"kind": "rtsp"}}}, env={})


def test_environment_overrides_keys(tmp_path: Path) -> None:
    env = {"LINESIDE__LINE__SOURCE__FPS": "2.5", "LINESIDE__STATION__HTTP_PORT": "9001", "OTHER": "x"}
    cfg = load_config(_write(tmp_path, _minimal()), env=env)
    assert cfg.line.source.fps == 2.5
    assert cfg.station.http_port == 9001


def test_environment_override_is_validated_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line\.source\.nonsense: unknown key"):
        load_config(_write(tmp_path, _minimal()), env={"LINESIDE__LINE__SOURCE__NONSENSE": "1"})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("line: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})
