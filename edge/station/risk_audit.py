"""The risk audit: is each line keeping its promise of at most α errors among the frames it decides alone?

The daemon sends a configured fraction of its auto-decided frames to review with reason ``sampled``. Those are a
random sample of the auto-decisions (unlike the uncertain ones), so among the sampled items that have been
reviewed, the share the operator answered differently estimates the real error rate of the auto-decisions.

- An **error** is a disagreement at the good/defect level (the level of the routing guarantee): the daemon said
  good and the operator a defect, or the other way round. A different defect class is counted separately
  (``class_errors``: any verdict ≠ final answer) and shown, but does not raise the alarm.
- Each item counts once, with its latest review; an undone review is gone from the database, so its item counts
  again only once it is reviewed again.
- The interval is the exact two-sided 95 % Clopper–Pearson interval (``edge.uncertainty.risk``).
- State per line: ``alarm`` when the interval's lower bound exceeds α (the guarantee is broken, and not by bad
  luck), ``warning`` when only the point estimate does, ``ok`` otherwise, ``none`` before any sampled review.

α comes from the station config (``audit_alpha``, ``audit_alpha_by_line``). ``AuditMonitor`` keeps the latest
figures for the console's banner and the Prometheus gauges (refreshed at most every ``ttl_s``: the banner is on
every page) and logs once per transition into and out of alarm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from edge.findings import GOOD
from edge.station.store import Store
from edge.station.tables import STATUS_PENDING, ReviewItemRow, ReviewRow
from edge.uncertainty.risk import clopper_pearson

__all__ = ["CONFIDENCE", "AuditCollector", "AuditMonitor", "AuditSnapshot", "LineAudit", "audit_counts",
           "estimate"]

log = logging.getLogger(__name__)

SAMPLED = "sampled"
CONFIDENCE = 0.95
State = Literal["none", "ok", "warning", "alarm"]


@dataclass(frozen=True)
class LineAudit:
    """The running error-rate estimate of one line's auto-decisions, from its reviewed sampled frames."""

    line_id: str
    alpha: float
    n: int  # reviewed sampled items (pending ones are in the queue, reason "sampled")
    errors: int  # good/defect disagreements
    class_errors: int  # any verdict disagreement (includes errors)
    rate: float
    lower: float
    upper: float
    class_rate: float
    class_lower: float
    class_upper: float
    confidence: float = CONFIDENCE

    @property
    def state(self) -> State:
        if self.n == 0:
            return "none"
        if self.lower > self.alpha:
            return "alarm"
        if self.rate > self.alpha:
            return "warning"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state}


@dataclass(frozen=True)
class AuditSnapshot:
    at_wall: float
    lines: list[LineAudit] = field(default_factory=list)

    @property
    def alarms(self) -> list[LineAudit]:
        return [a for a in self.lines if a.state == "alarm"]

    @property
    def warnings(self) -> list[LineAudit]:
        return [a for a in self.lines if a.state == "warning"]


@lru_cache(maxsize=4096)
def _interval(errors: int, n: int) -> tuple[float, float]:
    # cached: the exact interval sums O(n) binomial terms, and the counts change only when someone reviews
    return clopper_pearson(errors, n, CONFIDENCE)


def audit_counts(session: Session) -> dict[str, tuple[int, int, int]]:
    """Per line: (reviewed sampled items, good/defect errors, class-level errors), in one grouped query.

    Driven from the reviews (their number grows with people's work) rather than from all items (which grows with
    ingest): the review_items rows are reached by primary key, so no index on ``reason`` is needed."""
    latest = (select(ReviewRow.item_id, func.max(ReviewRow.id).label("review_id"))
              .group_by(ReviewRow.item_id).subquery())
    flipped = or_(and_(ReviewItemRow.verdict == GOOD, ReviewRow.final_verdict != GOOD),
                  and_(ReviewItemRow.verdict != GOOD, ReviewRow.final_verdict == GOOD))
    query = (select(ReviewItemRow.line_id, func.count(),
                    func.sum(case((flipped, 1), else_=0)),
                    func.sum(case((ReviewRow.final_verdict != ReviewItemRow.verdict, 1), else_=0)))
             .select_from(latest)
             .join(ReviewRow, ReviewRow.id == latest.c.review_id)
             .join(ReviewItemRow, ReviewItemRow.id == latest.c.item_id)
             .where(ReviewItemRow.reason == SAMPLED)
             .group_by(ReviewItemRow.line_id))
    return {str(line): (int(n), int(errors or 0), int(class_errors or 0))
            for line, n, errors, class_errors in session.execute(query)}


def waiting_sampled(store: Store) -> dict[str, int]:
    """Per line: sampled frames still waiting for a person (their answers are what the audit needs)."""
    with store.session() as s:
        query = (select(ReviewItemRow.line_id, func.count())
                 .where(ReviewItemRow.status == STATUS_PENDING, ReviewItemRow.reason == SAMPLED)
                 .group_by(ReviewItemRow.line_id))
        return {str(line): int(n) for line, n in s.execute(query)}


def line_audit(line_id: str, alpha: float, n: int, errors: int, class_errors: int) -> LineAudit:
    lower, upper = _interval(errors, n)
    class_lower, class_upper = _interval(class_errors, n)
    return LineAudit(line_id=line_id, alpha=alpha, n=n, errors=errors, class_errors=class_errors,
                     rate=errors / n if n else 0.0, lower=lower, upper=upper,
                     class_rate=class_errors / n if n else 0.0, class_lower=class_lower, class_upper=class_upper)


def estimate(store: Store, alpha: float, alpha_by_line: Mapping[str, float] | None = None) -> list[LineAudit]:
    """Every line with reviewed sampled items or an α of its own in config, by line id."""
    by_line = dict(alpha_by_line or {})
    with store.session() as s:
        counts = audit_counts(s)
    lines = sorted(set(counts) | set(by_line))
    return [line_audit(line, by_line.get(line, alpha), *counts.get(line, (0, 0, 0))) for line in lines]


class AuditMonitor:
    """The latest estimate, shared by the console and the metrics endpoint, with alarm transitions logged."""

    def __init__(self, store: Store, alpha: float, alpha_by_line: Mapping[str, float] | None = None,
                 ttl_s: float = 10.0) -> None:
        self.store, self.alpha, self.alpha_by_line, self.ttl_s = store, alpha, dict(alpha_by_line or {}), ttl_s
        self._lock = threading.Lock()
        self._snapshot: AuditSnapshot | None = None
        self._at = 0.0
        self._alarmed: set[str] = set()
        self._last_error = ""

    def snapshot(self, max_age_s: float | None = None) -> AuditSnapshot:
        """The estimate, recomputed when older than ``max_age_s`` (default ``ttl_s``; 0 = now)."""
        max_age = self.ttl_s if max_age_s is None else max_age_s
        with self._lock:  # one refresh at a time; the others wait for it rather than repeat it
            if self._snapshot is None or time.monotonic() - self._at >= max_age:
                self._snapshot = AuditSnapshot(time.time(), estimate(self.store, self.alpha, self.alpha_by_line))
                self._at = time.monotonic()
                self._log_transitions(self._snapshot)
            return self._snapshot

    def safe_snapshot(self) -> AuditSnapshot | None:
        """For the banner on every console page and for /metrics: the cached figures, or None when they cannot be
        had (logged once per distinct failure)."""
        try:
            return self.snapshot()
        except Exception as exc:  # a failing audit query must not take the review pages or ingest metrics down
            if str(exc) != self._last_error:  # once per distinct failure, not once per page view
                log.error("risk audit: cannot compute the estimate: %s", exc)
                self._last_error = str(exc)
            return None

    def _log_transitions(self, snap: AuditSnapshot) -> None:
        alarmed = {a.line_id for a in snap.alarms}
        for a in snap.alarms:
            if a.line_id not in self._alarmed:
                log.error("risk audit ALARM on line %s: %d errors in %d reviewed sampled frames, error rate %.2f %% "
                          "(95 %% CI %.2f–%.2f %%) is above α = %.2f %%", a.line_id, a.errors, a.n, 100 * a.rate,
                          100 * a.lower, 100 * a.upper, 100 * a.alpha)
        for line in sorted(self._alarmed - alarmed):
            log.info("risk audit alarm on line %s cleared", line)
        self._alarmed = alarmed


class AuditCollector(Collector):
    """Prometheus gauges of the risk audit, per line, read from the monitor at scrape time."""

    def __init__(self, monitor: AuditMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.monitor.safe_snapshot()
        lines = snap.lines if snap is not None else []
        gauges = (
            ("lineside_audit_error_rate", "good/defect error rate among reviewed sampled auto-decisions",
             lambda a: a.rate),
            ("lineside_audit_error_rate_lower", "95 % Clopper–Pearson lower bound of lineside_audit_error_rate",
             lambda a: a.lower),
            ("lineside_audit_error_rate_upper", "95 % Clopper–Pearson upper bound of lineside_audit_error_rate",
             lambda a: a.upper),
            ("lineside_audit_class_error_rate", "class-level disagreement rate among reviewed sampled auto-decisions",
             lambda a: a.class_rate),
            ("lineside_audit_n", "reviewed sampled auto-decisions the estimate rests on", lambda a: a.n),
            ("lineside_audit_errors", "good/defect errors among them", lambda a: a.errors),
            ("lineside_audit_alpha", "the error rate the line promises (station audit_alpha)", lambda a: a.alpha),
            ("lineside_audit_alarm", "1 while the lower bound of the error rate is above alpha",
             lambda a: a.state == "alarm"),
        )
        for name, doc, value in gauges:
            fam = GaugeMetricFamily(name, doc, labels=["line"])
            for a in lines:
                fam.add_metric([a.line_id], float(value(a)))
            yield fam
