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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "LINESIDE__"


class ConfigError(Exception):
    """A config that cannot be used; the message is one line naming the file and the key path."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


SourceKind = Literal["folder", "video", "camera", "rtsp", "http", "gstreamer"]

DEFAULT_MAX_FILE_BYTES = 128 * 2**20
DEFAULT_MAX_PIXELS = 25_000_000


class ImageLimits(StrictModel):
    """What an image file may cost before it is decoded (edge.images): a bigger file, or a header that promises
    more pixels, is refused and counted, never decoded."""

    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1024, description="image files larger than this are "
                                "refused unread (a 25 MP 32-bit BMP is 100 MB)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="images whose header gives width × height above "
                            "this are refused before decoding; the daemon's memory scales with it (README, "
                            "'Hostile input')")


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


def _parse_shapes(value: Any) -> Any:
    """A TensorRT profile's shapes, as trtexec writes them ("image:1x3x256x256,input_ids:1x8") or per input
    ({"image": "1x3x256x256"} or {"image": [1, 3, 256, 256]}), normalised to {input: [dims]}."""
    if value is None or isinstance(value, Mapping) and not value:
        return None
    if isinstance(value, str):
        pairs = [item.rpartition(":") for item in value.split(",") if item.strip()]
        if any(not name.strip() for name, _, _ in pairs):
            raise ValueError(f"'{value}' is not 'input:d0xd1x…[,input2:…]'")
        value = {name.strip(): dims for name, _, dims in pairs}
    if not isinstance(value, Mapping):
        raise ValueError("expected 'input:d0xd1x…' or a mapping input → shape")
    shapes: dict[str, list[int]] = {}
    for name, dims in value.items():
        parts = dims.lower().split("x") if isinstance(dims, str) else dims
        try:
            shape = [int(d) for d in parts]
        except (TypeError, ValueError):
            raise ValueError(f"shape of '{name}' must be like 1x3x256x256, got {dims!r}") from None
        if not shape or min(shape) < 1:
            raise ValueError(f"shape of '{name}' must have positive dimensions, got {dims!r}")
        shapes[str(name)] = shape
    return shapes


class TensorrtConfig(StrictModel):
    """ONNX Runtime's TensorRT execution provider (provider: tensorrt, or auto where TensorRT is available)."""

    fp16: bool = Field(False, description="let TensorRT pick FP16 kernels (usual on Jetson; check the pack after)")
    int8: bool = Field(False, description="let TensorRT pick INT8 kernels; needs a calibration table unless the "
                       "model is QDQ-quantised")
    int8_calibration_table: Path | None = Field(
        None, description="INT8 calibration table, e.g. from deploy/tensorrt/build_engines.py --int8")
    int8_calibration_native: bool = Field(
        True, description="the table is TensorRT's own calibration cache (build_engines.py); false: ONNX Runtime's "
        "flatbuffer table (onnxruntime.quantization)")
    engine_cache: bool = Field(True, description="keep built engines on disk; later starts load them in seconds")
    engine_cache_dir: Path = Field(Path("var/trt-cache"), description="engines go to DIR/<onnx sha256>/"
                                   "trt<version>_<gpu>_<precision>/, so a stale engine is never loaded")
    timing_cache: bool = Field(True, description="reuse TensorRT's kernel timings across engine builds")
    max_workspace_bytes: int | None = Field(None, gt=0, description="TensorRT builder workspace; none = its default")
    profile_min_shapes: dict[str, list[int]] | None = Field(
        None, description="optimisation profile, smallest shapes: 'image:1x3x256x256' or {input: shape}; "
        "min, opt and max go together; inputs a model lacks are left out of its session")
    profile_opt_shapes: dict[str, list[int]] | None = Field(None, description="optimisation profile, tuned shapes")
    profile_max_shapes: dict[str, list[int]] | None = Field(None, description="optimisation profile, largest shapes")
    dla_core: int | None = Field(None, ge=0, description="run on this DLA core (Jetson AGX/NX); none = GPU")

    @model_validator(mode="before")
    @classmethod
    def _shapes_from_text(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("profile_min_shapes", "profile_opt_shapes", "profile_max_shapes"):
                if key in data:
                    data[key] = _parse_shapes(data[key])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TensorrtConfig:
        given = [self.profile_min_shapes is not None, self.profile_opt_shapes is not None,
                 self.profile_max_shapes is not None]
        if any(given) and not all(given):
            raise ValueError("profile_min_shapes, profile_opt_shapes and profile_max_shapes go together")
        if self.int8_calibration_table is not None and not self.int8:
            raise ValueError("int8_calibration_table is set but int8 is false")
        return self


class ModelConfig(StrictModel):
    pack: Path = Field(Path("models/starter"), description="model pack directory (manifest.json inside)")
    provider: Literal["auto", "tensorrt", "cuda", "cpu"] = Field(
        "auto", description="auto: TensorRT, else CUDA, else CPU, whichever this ONNX Runtime offers; an explicit "
        "one that is not offered (or fails to start) refuses the pack")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 = runtime default")
    max_batch: int = Field(1, ge=1, le=64, description="encode up to this many waiting frames in one run (replays, "
                           "a fast source); 1 = frame by frame")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="with max_batch > 1: how long to wait for more "
                                 "frames after the first")
    device_id: int = Field(0, ge=0, description="CUDA device of the tensorrt and cuda providers")
    tensorrt: TensorrtConfig = TensorrtConfig()
    search: Literal["auto", "float32", "int8"] = Field(
        "auto", description="the profile's few-shot search (its frame graph's memory-bank products): auto = int8 on "
        "the CPU provider of a CPU with VNNI, where the profile has an int8 graph that matches its references "
        "there, else float32")


class RoutingConfig(StrictModel):
    policy: Literal["profile", "threshold"] = Field(
        "profile", description="profile: the line profile's calibrated risk/budget threshold on the learned p(wrong) "
        "where it has one (else review_threshold); threshold: always review_threshold")
    review_threshold: float = Field(0.5, ge=0, le=1, description="uncertainty above this goes to review")
    audit_fraction: float = Field(0.02, ge=0, le=1, description="share of auto-decided frames also sent to review "
                                  "(reason 'sampled') so the station measures the real error rate")
    audit_seed: int | None = Field(None, description="seed of the audit draw (tests); none = random")
    jpeg_quality: int = Field(90, ge=30, le=100)


def _curve_both_or_neither(model: BaseModel, first: str, second: str) -> None:
    """CURVE needs both of its files (or neither): one alone would start an unencrypted socket by mistake."""
    if (getattr(model, first) is None) != (getattr(model, second) is None):
        have, missing = (first, second) if getattr(model, second) is None else (second, first)
        raise ValueError(f"CURVE is half configured: {have} is set but {missing} is not; set both or neither")


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
    writer_queue: int = Field(16, ge=1, le=1024, description=(
        "decided frames (routed ones with their image) the outbox writer thread may hold; deciding waits when full"))
    writer_queue_mb: float = Field(128.0, gt=0, le=65536, description=(
        "MiB of frame images the outbox writer thread may hold (a bound beside writer_queue for large frames); "
        "deciding waits when reached, and one frame always passes when the writer holds none"))
    curve_secret_key: Path | None = Field(None, description="this edge's CURVE secret file (NAME.key_secret)")
    station_public_key: Path | None = Field(None, description="the station's CURVE public file (NAME.key)")

    @model_validator(mode="after")
    def _curve_whole_or_off(self) -> TransportConfig:
        _curve_both_or_neither(self, "curve_secret_key", "station_public_key")
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
    reload_watch_s: float = Field(2.0, ge=0, description="check this often for a new line-profile version (its "
                                  "CURRENT) or model pack (its manifest) and reload between frames; 0 = SIGHUP only")


class LineConfig(StrictModel):
    id: str = Field("line-1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceConfig
    model: ModelConfig = ModelConfig()
    profile: Path = Field(Path("var/profiles/line-1"), description="line profile directory (versions inside)")
    routing: RoutingConfig = RoutingConfig()
    transport: TransportConfig = TransportConfig()
    status_file: Path | None = Field(None, description="daemon writes its status JSON here every few seconds")
    decision_log: Path | None = Field(None, description="JSON line per decision (auto or routed), appended")
    decision_log_max_bytes: int = Field(64 * 2**20, ge=4096, description="the decision log rolls over at this "
                                        "size: <log>.1 … <log>.N, oldest dropped")
    decision_log_keep: int = Field(5, ge=0, le=1000, description="rolled-over decision logs kept")
    resume_journal: Path | None = Field(
        None, description="where a non-looping folder or video source records what it has decided, so a restart "
        "goes on where it stopped; default <decision_log>.resume, or <outbox_dir>/resume.jsonl without a decision "
        "log")
    images: ImageLimits = Field(ImageLimits(), description="bounds on every image file the line reads: the folder "
                                "source, and calibrate/train/eval/quantise inputs")
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
    second_review_fraction: float = Field(
        0.0, ge=0, le=1, description="share of items that, once reviewed, go back to the queue for a second, "
        "independent review by another reviewer; the console's stats page shows how often the two agree")
    curve_secret_key: Path | None = Field(None, description="the station's CURVE secret file (NAME.key_secret)")
    allowed_keys_dir: Path | None = Field(None, description="folder of allowed edge CURVE public files (*.key)")
    metrics_host: str = Field("127.0.0.1", description="Prometheus /metrics bind host; loopback unless widened")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="station /metrics port; None = off")
    wal_checkpoint_idle_s: float = Field(
        1.0, ge=0, description="SQLite: truncate the WAL after ingest has been quiet this long; 0 = off")
    retention_min_free_bytes: int | None = Field(
        None, ge=0, description="retention: keep at least this many bytes free on storage_dir's file system by "
        "deleting the oldest reviewed items (never an unreviewed one); None = off")
    retention_max_bytes: int | None = Field(
        None, ge=1, description="retention: review images take at most this many bytes, the oldest reviewed items "
        "deleted first (never an unreviewed one); None = off")
    retention_interval_s: float = Field(60.0, gt=0, description="retention: check the watermarks this often")
    orphan_scan_interval_s: float = Field(
        3600.0, gt=0, description="remove image files without a row and leftover temp files this often (and at "
        "start)")
    group_distance: float = Field(
        0.15, ge=0, lt=2, description="look-alike groups: an arriving item joins the nearest waiting group of its "
        "line and model verdict whose centre lies within this cosine distance of its global embedding (starter "
        "pack, textile: global-defect frames lie 0.06–0.13 apart, good frames 0.14–0.36, a brightness change "
        "0.04; python -m edge.bench.lookalike); 0 = every item alone")
    group_max_items: int = Field(24, ge=2, le=200, description="look-alike groups: members at most")
    group_window_s: float = Field(
        3600.0, gt=0, description="look-alike groups: an item joins only a group that got a member this recently")
    audit_alpha: float = Field(
        0.01, gt=0, lt=1, description="risk audit: the error rate among auto-decided frames a line promises; the "
        "console alarms when the 95 % interval of the sampled frames' error rate lies wholly above it")
    images: ImageLimits = Field(ImageLimits(), description="bounds on the images the station takes in: a JPEG "
                                "or heat map whose header promises more pixels is refused at ingest")
    audit_alpha_by_line: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=dict, description="risk audit: α per line id where a line's profile promises another one")

    @model_validator(mode="after")
    def _curve_whole_or_off(self) -> StationConfig:
        _curve_both_or_neither(self, "curve_secret_key", "allowed_keys_dir")
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
