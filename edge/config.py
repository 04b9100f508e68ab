"""config.yaml, validated.

One file describes a line (`line:`: source, model pack, line profile, routing, station address) and the review
station (`station:`). Every model forbids unknown keys, so a typo fails at start-up with the key's path and the
file, not at 3 a.m. Environment variables override keys: ``LINESIDE__LINE__SOURCE__FPS=5`` sets
``line.source.fps``; the value is read as a YAML scalar.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "LINESIDE__"


class ConfigError(Exception):
    """A config that cannot be used; the message is one line naming the file and the key path."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


SourceKind = Literal["folder", "video", "camera", "rtsp", "http", "gstreamer"]


class SourceConfig(StrictModel):
    """Where frames come from."""

    kind: SourceKind = "folder"
    id: str = Field("cam0", min_length=1, description="source id, stamped on every frame")
    path: Path | None = Field(None, description="folder of images (folder) or a video file (video)")
    url: str | None = Field(None, description="rtsp:// or http(s):// stream (rtsp, http)")
    device: int | str | None = Field(None, description="V4L2 index or /dev/videoN (camera)")
    pipeline: str | None = Field(None, description="GStreamer pipeline ending in appsink (gstreamer)")
    fps: float = Field(10.0, gt=0, description="pace of folder/video sources; requested rate of cameras")
    loop: bool = Field(False, description="folder/video: start again at the end")
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _needs_its_address(self) -> SourceConfig:
        needed = {"folder": "path", "video": "path", "camera": "device", "rtsp": "url", "http": "url",
                  "gstreamer": "pipeline"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"source kind '{self.kind}' needs '{needed}'")
        return self


class ModelConfig(StrictModel):
    pack: Path = Field(Path("models/starter"), description="model pack directory (manifest.json inside)")
    provider: Literal["auto", "tensorrt", "cuda", "cpu"] = "auto"
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 = runtime default")


class RoutingConfig(StrictModel):
    review_threshold: float = Field(0.5, ge=0, le=1, description="uncertainty above this goes to review")
    jpeg_quality: int = Field(90, ge=30, le=100)


class TransportConfig(StrictModel):
    station: str = Field("tcp://127.0.0.1:5571", description="station ingest address (ZeroMQ)")
    outbox_dir: Path = Field(Path("var/outbox"), description="durable outbox; frames wait here until acked")
    ack_timeout_s: float = Field(5.0, gt=0)
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(15.0, gt=0)
    max_in_flight: int = Field(32, ge=1)
    drain_timeout_s: float = Field(10.0, ge=0, description="at shutdown, wait this long for acks")
    outbox_max_items: int | None = Field(None, ge=1, description="outbox bound by count; None = unbounded")
    outbox_max_bytes: int | None = Field(None, ge=1, description="outbox bound by bytes on disk; None = unbounded")
    outbox_full_policy: Literal["drop_oldest", "refuse_newest"] = Field(
        "drop_oldest", description="when full: evict the oldest waiting item, or refuse the new one")
    outbox_fsync: Literal["always", "batch"] = Field(
        "always", description="always: each item durable when put returns; batch: fsync every N puts or 100 ms")
    curve_secret_key: Path | None = Field(None, description="this edge's CURVE secret file (NAME.key_secret)")
    station_public_key: Path | None = Field(None, description="the station's CURVE public file (NAME.key)")

    @model_validator(mode="after")
    def _curve_whole_or_off(self) -> TransportConfig:
        if (self.curve_secret_key is None) != (self.station_public_key is None):
            have, missing = (("curve_secret_key", "station_public_key") if self.station_public_key is None
                             else ("station_public_key", "curve_secret_key"))
            raise ValueError(f"CURVE is half configured: {have} is set but {missing} is not; set both or neither")
        return self


class OpsConfig(StrictModel):
    """Operations of the daemon: health/metrics endpoint, internal watchdog, decisions feed, logs."""

    health_host: str = Field("127.0.0.1", description="/healthz /readyz /metrics bind host; loopback unless widened")
    health_port: int | None = Field(None, ge=0, le=65535,
                                    description="health + Prometheus metrics HTTP port; None = off, 0 = any free")
    inference_stuck_s: float = Field(30.0, gt=0, description="one frame's inference longer than this is stuck")
    worker_restarts_max: int = Field(3, ge=0, description="stuck-worker restarts allowed within the window; "
                                     "one more and the daemon exits non-zero for systemd to restart it")
    worker_restart_window_s: float = Field(600.0, gt=0)
    worker_backoff_initial_s: float = Field(1.0, ge=0, description="wait before a restart; doubles each time")
    capture_stall_s: float = Field(30.0, gt=0, description="a connected live source silent this long is reopened")
    decisions_pub: str | None = Field(None, description="ZeroMQ PUB endpoint for decisions as JSON, e.g. "
                                      "ipc:///run/lineside/decisions or tcp://127.0.0.1:5572; None = off")


class LineConfig(StrictModel):
    id: str = Field("line-1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceConfig
    model: ModelConfig = ModelConfig()
    profile: Path = Field(Path("var/profiles/line-1"), description="line profile directory (versions inside)")
    routing: RoutingConfig = RoutingConfig()
    transport: TransportConfig = TransportConfig()
    status_file: Path | None = Field(None, description="daemon writes its status JSON here every few seconds")
    decision_log: Path | None = Field(None, description="JSON line per decision (auto or routed), appended")
    ops: OpsConfig = OpsConfig()


class StationConfig(StrictModel):
    ingest_bind: str = Field("tcp://127.0.0.1:5571", description="ZeroMQ ROUTER bind address")
    http_host: str = Field("127.0.0.1", description="console bind host; loopback unless deliberately widened")
    http_port: int = Field(8080, ge=0, le=65535)
    database_url: str = Field("sqlite:///var/station/station.db")
    storage_dir: Path = Field(Path("var/station/images"), description="review images, one JPEG file per frame")
    session_secret_file: Path | None = Field(
        None, description="key that signs console session cookies; default <storage_dir>/session.secret, "
        "made on first start (mode 0600)")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="console login lasts this long")
    lease_minutes: float = Field(5.0, gt=0, le=24 * 60,
                                 description="opening an item claims it for this long (renewed while open)")
    curve_secret_key: Path | None = Field(None, description="the station's CURVE secret file (NAME.key_secret)")
    allowed_keys_dir: Path | None = Field(None, description="folder of allowed edge CURVE public files (*.key)")
    metrics_host: str = Field("127.0.0.1", description="Prometheus /metrics bind host; loopback unless widened")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="station /metrics port; None = off")
    wal_checkpoint_idle_s: float = Field(
        1.0, ge=0, description="SQLite: truncate the WAL after ingest has been quiet this long; 0 = off")

    @model_validator(mode="after")
    def _curve_whole_or_off(self) -> StationConfig:
        if (self.curve_secret_key is None) != (self.allowed_keys_dir is None):
            have, missing = (("curve_secret_key", "allowed_keys_dir") if self.allowed_keys_dir is None
                             else ("allowed_keys_dir", "curve_secret_key"))
            raise ValueError(f"CURVE is half configured: {have} is set but {missing} is not; set both or neither")
        return self


class Config(StrictModel):
    line: LineConfig
    station: StationConfig = StationConfig()


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after", "function-before") or p.startswith("function-"):
            continue
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def parse_config(data: Mapping[str, Any], source: str = "<config>",
                 env: Mapping[str, str] | None = None) -> Config:
    """Validate a config mapping (plus environment overrides); raise ConfigError with one clear line."""
    merged = _apply_env(dict(data), os.environ if env is None else env)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _loc_to_path(tuple(first["loc"])) or "(top level)"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {where}: {msg}{more}") from None


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate config.yaml; relative paths inside stay relative to the working directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with 'line:' and 'station:'")
    return parse_config(data, str(path), env)
