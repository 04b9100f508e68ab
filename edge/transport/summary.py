"""Per-minute decision summaries: what a line decided, auto and routed, sent to the station over the review link.

Most frames are never routed to review, so the station would see defect rates only through the few it reviews. Each
minute the edge sends a summary of *every* decision — counts per verdict among the frames it decided by itself and
among those it routed, counts per routing reason and per model version — so defect rates per hour and per shift are
visible at the station. The frame-level record (to trace a part to its decision) stays in the edge's decision log;
a summary names the first and last frame id of its minute so the two can be lined up.

Wire: ``[b"summary", json]`` on the same DEALER link as the items (``[b"item", header, jpeg]`` is unchanged). The
station answers ``[b"ack", summary_id]`` once the summary is committed — exactly once per ``summary_id``, as items
are per frame id — or ``[b"err", summary_id, reason]``. Summaries go through the edge's durable outbox like items,
so a station away for an hour gets that hour's summaries when it is back. ``summary_id`` is
``summary/<line>/<boot>/<minute>/<part>``: one per daemon run (boot) and minute, and a further part when decisions
for a minute already sent arrive late; the station adds the parts up.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.transport.schema import WireError, id_of, parse_versioned

KIND_SUMMARY = b"summary"
SUMMARY_VERSION = 1
MAX_SUMMARY_BYTES = 64 * 1024
MAX_KEYS = 200  # verdicts, reasons or versions in one summary: a line has a handful; more is a broken sender

_Counts = dict[str, int]


class DecisionSummary(BaseModel):
    """Counts of one daemon run's decisions over one minute (by capture time)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SUMMARY_VERSION
    summary_id: str = Field(max_length=200, pattern=r"^summary/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[0-9]+/[0-9]+$",
                            description="summary/<line>/<boot>/<minute>/<part>: unique, the station stores it once")
    line_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    boot: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the daemon run that decided these frames")
    minute_wall: int = Field(ge=0, multiple_of=60, description="epoch seconds of the minute's start")
    frames: int = Field(ge=0, description="decisions counted: sum(auto) + sum(routed)")
    auto: _Counts = Field(default_factory=dict, description="verdict → decisions taken by the edge itself")
    routed: _Counts = Field(default_factory=dict, description="verdict → frames routed to review")
    reasons: _Counts = Field(default_factory=dict, description="routing reason → frames routed for it")
    versions: _Counts = Field(default_factory=dict, description="'<pack> <profile>' → decisions made with them")
    first_frame_id: str | None = Field(None, max_length=200)
    last_frame_id: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> DecisionSummary:
        for name in ("auto", "routed", "reasons", "versions"):
            counts: _Counts = getattr(self, name)
            if len(counts) > MAX_KEYS:
                raise ValueError(f"{name}: {len(counts)} keys, at most {MAX_KEYS}")
            bad = next((k for k, v in counts.items() if v < 0 or not 0 < len(k) <= 200), None)
            if bad is not None:
                raise ValueError(f"{name}: key {bad[:40]!r} has a negative count or a bad length")
        if sum(self.auto.values()) + sum(self.routed.values()) != self.frames:
            raise ValueError(f"frames {self.frames} is not the sum of auto and routed counts")
        if not self.summary_id.startswith(f"summary/{self.line_id}/{self.boot}/{self.minute_wall}/"):
            raise ValueError("summary_id does not name this summary's line, boot and minute")
        return self


def encode_summary(summary: DecisionSummary) -> list[bytes]:
    return [KIND_SUMMARY, summary.model_dump_json().encode()]


def decode_summary(frames: list[bytes]) -> DecisionSummary:
    """Parse ``[b"summary", json]``; raise WireError naming what is wrong."""
    if len(frames) != 2:
        raise WireError(f"expected 2 frames (kind, summary), got {len(frames)}")
    kind, body = frames
    if kind != KIND_SUMMARY:
        raise WireError(f"unknown message kind {kind[:20]!r}")
    if len(body) > MAX_SUMMARY_BYTES:
        raise WireError(f"summary too large ({len(body)} bytes > {MAX_SUMMARY_BYTES})")
    return parse_versioned(DecisionSummary, body, "summary", SUMMARY_VERSION)


def summary_id_of(frames: list[bytes]) -> str:
    """Best-effort summary id of a (possibly malformed) summary message, for the err reply."""
    return id_of(frames, "summary_id", MAX_SUMMARY_BYTES)
