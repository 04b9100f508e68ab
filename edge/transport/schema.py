"""The review item as it travels from edge to station, and its wire format.

On the wire an item is a ZeroMQ multipart message ``[b"item", header_json, jpeg]`` (the JPEG travels as raw bytes,
not base64). The station answers ``[b"ack", frame_id]`` once the item is committed, or
``[b"err", frame_id_or_empty, reason]`` when the message cannot be accepted (it is then counted and logged there;
the edge keeps such an item in its outbox's ``rejected/`` folder for a person to look at, never drops it silently).
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode, b64encode
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.findings import Region
from edge.images import ImageError, read_header

SCHEMA_VERSION = 1
KIND_ITEM = b"item"
KIND_ACK = b"ack"
KIND_ERR = b"err"
MAX_JPEG_BYTES = 32 * 1024 * 1024
# heatmap_png: base64 characters at most (a 64×64 8-bit map is ~5 KB), so a bad sender cannot make the station hold
# megabytes per item; and the scale of its grey levels: 0 = the good-image mean or below, 255 = this many good-image
# standard deviations above it or more (the anomaly map is in those units, edge.grounding.anomaly.combine)
MAX_HEATMAP_CHARS = 64 * 1024
MAX_HEATMAP_PIXELS = 512 * 512  # the model's grid is tens of cells a side; a PNG promising more is refused unread
HEATMAP_Z_MAX = 8.0
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# embedding: the frame's global embedding as base64 little-endian float16; at most this many dimensions (the
# starter pack's is 256: 512 bytes, 684 base64 characters)
MAX_EMBEDDING_DIMS = 2048
MAX_EMBEDDING_CHARS = (MAX_EMBEDDING_DIMS * 2 + 2) // 3 * 4

__all__ = ["Region", "ReviewItem", "ReviewReason", "WireError", "decode_item", "embedding_b64", "embedding_of",
           "encode_item", "frame_id_of"]

M = TypeVar("M", bound=BaseModel)
ReviewReason = Literal["uncertain", "unknown_frame", "sampled", "ood"]


class WireError(ValueError):
    """A message that does not follow the schema; the text says what is wrong."""


class ReviewItem(BaseModel):
    """A frame the edge could not decide alone, with everything a reviewer needs to judge it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    frame_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
                          description="unique across lines: <line>:<source>:<boot>:<seq>")
    line_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    source_id: str = Field(min_length=1, max_length=100)
    seq: int = Field(ge=0)
    captured_wall: float = Field(description="epoch seconds when the frame was captured")
    decided_wall: float = Field(description="epoch seconds when the edge decided")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    verdict: str = Field(description="'good' or the defect class the model chose")
    class_scores: dict[str, float] = Field(description="softmax over 'good' and each defect class")
    anomaly_score: float
    anomaly_threshold: float
    uncertainty: float = Field(ge=0, le=1)
    reason: ReviewReason = "uncertain"
    regions: list[Region] = Field(default_factory=list)
    pack_version: str
    profile_version: str
    heatmap_png: str | None = Field(
        None, max_length=MAX_HEATMAP_CHARS,
        description="the map the regions were cut from, on its own grid (e.g. 32×32), as a base64 8-bit grayscale "
        "PNG: grey level = clip(z / HEATMAP_Z_MAX, 0, 1) × 255 with z in good-image standard deviations (the "
        "anomaly map), or the line model's defect probability × 255 where the line localises with it; stretched "
        "over the whole frame as the regions are. None: not sent (older edges)")
    embedding: str | None = Field(
        None, max_length=MAX_EMBEDDING_CHARS,
        description="the frame's global embedding (the pack's pooled image embedding) as base64 little-endian "
        f"float16, 1 to {MAX_EMBEDDING_DIMS} finite values, not all zero; the station groups look-alike frames by "
        "it. None: not sent (older edges)")

    @field_validator("embedding")
    @classmethod
    def _is_embedding(cls, value: str | None) -> str | None:
        if value is not None:
            embedding_of(value)  # ValueError says what is wrong
        return value

    @field_validator("heatmap_png")
    @classmethod
    def _is_png(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            data = b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        if not data.startswith(_PNG_MAGIC):
            raise ValueError("not a PNG")
        try:
            header = read_header(data, "heatmap")
        except ImageError as exc:
            raise ValueError(str(exc)) from None
        if header.pixels > MAX_HEATMAP_PIXELS:  # a browser would decode it: a PNG bomb stops here
            raise ValueError(f"{header.width} × {header.height} pixels, more than {MAX_HEATMAP_PIXELS}")
        return value


def embedding_b64(vector: np.ndarray) -> str:
    """A global embedding as the wire carries it: base64 of its little-endian float16 values."""
    return b64encode(np.asarray(vector, dtype="<f2").ravel().tobytes()).decode("ascii")


def embedding_of(text: str) -> np.ndarray:
    """The float32 vector of a wire embedding; ValueError when it is not base64 of 1 to MAX_EMBEDDING_DIMS finite
    float16 values with a length above zero."""
    try:
        data = b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if not data or len(data) % 2 or len(data) > 2 * MAX_EMBEDDING_DIMS:
        raise ValueError(f"{len(data)} bytes: not 1 to {MAX_EMBEDDING_DIMS} float16 values")
    vector = np.frombuffer(data, dtype="<f2").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("not finite")
    if not np.any(vector):
        raise ValueError("all zero")
    return vector


def encode_item(item: ReviewItem, jpeg: bytes) -> list[bytes]:
    """Multipart frames for one review item."""
    return [KIND_ITEM, item.model_dump_json().encode(), jpeg]


def decode_item(frames: list[bytes], max_pixels: int | None = None,
                max_bytes: int = MAX_JPEG_BYTES) -> tuple[ReviewItem, bytes]:
    """Parse ``[b"item", header, jpeg]``; raise WireError naming what is wrong. With ``max_pixels``, a JPEG whose
    frame header does not parse or promises more pixels is refused too (read from its header: no decode)."""
    if len(frames) != 3:
        raise WireError(f"expected 3 frames (kind, header, jpeg), got {len(frames)}")
    kind, header, jpeg = frames
    if kind != KIND_ITEM:
        raise WireError(f"unknown message kind {kind[:20]!r}")
    if not jpeg.startswith(b"\xff\xd8"):
        raise WireError("image is not a JPEG")
    if len(jpeg) > min(max_bytes, MAX_JPEG_BYTES):
        raise WireError(f"image too large ({len(jpeg)} bytes > {min(max_bytes, MAX_JPEG_BYTES)})")
    if not jpeg.endswith(b"\xff\xd9"):
        # a cheap check (no decode at 1,000 items/s) that catches the common breakage: a cut-off image
        raise WireError("image is truncated (no JPEG end-of-image marker)")
    if max_pixels is not None:
        try:
            size = read_header(jpeg, "image")
        except ImageError as exc:
            raise WireError(str(exc)) from None
        if size.format != "jpeg" or size.pixels > max_pixels:
            raise WireError(f"image of {size.width} × {size.height} pixels, more than max_pixels {max_pixels}")
    item = parse_versioned(ReviewItem, header, "header", SCHEMA_VERSION)
    return item, jpeg


def parse_versioned(model: type[M], body: bytes, what: str, version: int) -> M:
    """`body` as a JSON object of `model` carrying `schema_version` = `version`; WireError naming what is wrong
    (`what` names the part: "header", "summary")."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError(f"{what} is not a JSON object")
    if data.get("schema_version") != version:
        raise WireError(f"{what} schema_version {data.get('schema_version')!r} not supported (want {version})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or f"({what})"
        raise WireError(f"{what} field {where}: {first['msg']}") from None


def id_of(frames: list[bytes], key: str, max_bytes: int | None = None) -> str:
    """Best-effort id (`key` of the JSON in the second frame) of a possibly malformed message, for error replies
    and logs; "" when there is none."""
    if len(frames) >= 2 and (max_bytes is None or len(frames[1]) <= max_bytes):
        try:
            data = json.loads(frames[1])
            if isinstance(data, dict) and isinstance(data.get(key), str):
                return str(data[key])[:200]
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    return ""


def frame_id_of(frames: list[bytes]) -> str:
    """Best-effort frame id of a (possibly malformed) item message, for error replies and logs."""
    return id_of(frames, "frame_id")
