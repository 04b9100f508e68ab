"""Decision summaries at the station, added up per hour, shift or any bucket.

The edges send one summary per minute of decisions (``edge.transport.summary``), counting every frame — the ones
decided automatically and the ones routed to review. The station stores each once (``Store.ingest.add_summary``, in
``decision_summaries``); here they are added up into buckets of ``bucket_s`` seconds, aligned to UTC plus
``offset_s`` (a shift that starts at 06:00 UTC is ``bucket_s=28800, offset_s=21600``), for ``/api/summaries``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from edge.findings import GOOD
from edge.station.store.db import Database
from edge.station.tables import DecisionSummaryRow

MAX_BUCKETS = 10_000


class SummaryQueryError(ValueError):
    """A summaries query that cannot be answered; the text says which parameter is wrong."""


def summary_lines(store: Database) -> list[dict[str, Any]]:
    """Every line that sent summaries, with its first and last minute."""
    with store.session() as s:
        rows = s.execute(select(DecisionSummaryRow.line_id, func.min(DecisionSummaryRow.minute_wall),
                                func.max(DecisionSummaryRow.minute_wall), func.sum(DecisionSummaryRow.frames))
                         .group_by(DecisionSummaryRow.line_id).order_by(DecisionSummaryRow.line_id))
        return [{"line": line, "first_minute_wall": first, "last_minute_wall": last, "frames": int(frames or 0)}
                for line, first, last, frames in rows]


def _bucket(counts: dict[str, Counter[str]], frames: int, start: float, n: int) -> dict[str, Any]:
    auto, routed = counts["auto"], counts["routed"]
    defects = sum(v for k, v in auto.items() if k != GOOD) + sum(v for k, v in routed.items() if k != GOOD)
    return {"start_wall": start, "frames": frames, "auto_frames": sum(auto.values()),
            "routed_frames": sum(routed.values()), "defects": defects,
            "defect_rate": round(defects / frames, 6) if frames else None,
            "routed_share": round(sum(routed.values()) / frames, 6) if frames else None,
            "auto": dict(auto), "routed": dict(routed), "reasons": dict(counts["reasons"]),
            "versions": dict(counts["versions"]), "summaries": n}


def line_summaries(store: Database, line: str, since: float, until: float, bucket_s: int = 3600,
                   offset_s: int = 0) -> dict[str, Any]:
    """One line's decisions in [since, until) added up per bucket; verdicts other than 'good' count as defects."""
    if not 60 <= bucket_s <= 31 * 86400 or bucket_s % 60:
        raise SummaryQueryError("bucket_s must be a whole number of minutes between 60 and 31 days")
    if not 0 <= offset_s < bucket_s:
        raise SummaryQueryError("offset_s must be in [0, bucket_s)")
    if until <= since:
        raise SummaryQueryError("until must be after since")
    if (until - since) / bucket_s > MAX_BUCKETS:
        raise SummaryQueryError(f"more than {MAX_BUCKETS} buckets: use a larger bucket_s or a shorter range")
    with store.session() as s:
        rows = list(s.execute(
            select(DecisionSummaryRow.minute_wall, DecisionSummaryRow.frames, DecisionSummaryRow.auto,
                   DecisionSummaryRow.routed, DecisionSummaryRow.reasons, DecisionSummaryRow.versions)
            .where(DecisionSummaryRow.line_id == line, DecisionSummaryRow.minute_wall >= since,
                   DecisionSummaryRow.minute_wall < until)
            .order_by(DecisionSummaryRow.minute_wall)))
    buckets: dict[float, tuple[dict[str, Counter[str]], list[int]]] = {}
    total: dict[str, Counter[str]] = {k: Counter() for k in ("auto", "routed", "reasons", "versions")}
    total_frames = 0
    for minute, frames, *parts in rows:
        start = (minute - offset_s) // bucket_s * bucket_s + offset_s
        counts, tally = buckets.setdefault(start, ({k: Counter() for k in total}, [0, 0]))
        tally[0] += frames
        tally[1] += 1
        total_frames += frames
        for key, value in zip(("auto", "routed", "reasons", "versions"), parts, strict=True):
            counts[key].update({str(k): int(v) for k, v in (value or {}).items()})
            total[key].update({str(k): int(v) for k, v in (value or {}).items()})
    return {"line": line, "since": since, "until": until, "bucket_s": bucket_s, "offset_s": offset_s,
            "buckets": [_bucket(c, t[0], start, t[1]) for start, (c, t) in sorted(buckets.items())],
            "total": _bucket(total, total_frames, since, len(rows))}
