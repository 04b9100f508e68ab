"""The console's stats page: how fast people review, how often the model agrees with them, and with each other.

A handful of grouped queries: the window's reviews (an index range: by reviewer and hour, and the time spent by
reviewer), the last day's arrivals by hour, each item's latest answer against the model's verdict (grouped), the
second-review pairs, and the items waiting for one. With 100,000 items and 55,000 reviews (27,700 in the last 24 h)
the page answered in ≈ 0.2 s on a 2-core VM (``tests/station/bench_queue.py --stats``):

- **Review rate**: reviews in the window (default the last 24 h) per *active* hour (an hour in which that reviewer
  reviewed anything), so a shift's pace is not diluted by the night; and reviews in the last hour.
- **Median time per item**: the median of ``seconds_spent`` (the console's own timer, else the lease's age) over
  the window's reviews, per reviewer and for everyone. Medians, not means: one item left open over lunch must not
  move the figure.
- **Workload over time**: per hour of the last 24 h, items that arrived and reviews made.
- **Model vs operator** per model class: each item whose latest answer falls in the window, once; agreement at class
  level (verdict = final answer) and at good/defect level, and the confusion counts behind them.
- **Second reviews** (``station.second_review_fraction``): pairs of a first answer and the independent second one
  given in the window; agreement at good/defect and class level, and the latest disagreements for someone to settle.

Everything but the 24-hour workload follows the window (``hours``; a month at most), so the cost of the page grows
with the reviews of the window, not with the station's whole history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, cast, exists, func, select
from sqlalchemy.orm import Session, aliased

from edge.findings import GOOD
from edge.station.store import Store
from edge.station.tables import STATUS_PENDING, ReviewItemRow, ReviewRow

HOUR = 3600.0


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class ReviewerStats:
    """One reviewer's reviews in the window."""

    username: str
    reviews: int
    active_hours: int
    median_seconds: float | None

    @property
    def per_active_hour(self) -> float:
        return _share(self.reviews, self.active_hours)


@dataclass(frozen=True)
class HourLoad:
    """One hour of the last day: items that arrived, reviews made."""

    start_wall: float
    arrivals: int
    reviews: int


@dataclass(frozen=True)
class Agreement:
    """``n`` pairs of answers about the same items: how many name the same class, how many agree on good vs defect."""

    n: int
    agree: int  # the same class
    agree_good_defect: int  # both good, or both a defect (of any class)

    @property
    def rate(self) -> float:
        return _share(self.agree, self.n)

    @property
    def good_defect_rate(self) -> float:
        return _share(self.agree_good_defect, self.n)


@dataclass(frozen=True)
class ClassAgreement(Agreement):
    """The model's verdict ``verdict`` against people's final answers on the same ``n`` items."""

    verdict: str
    answers: dict[str, int]  # final answer -> items (the row of the confusion matrix)


@dataclass(frozen=True)
class Disagreement:
    """A second review that names another class than the first: for someone to settle."""

    item_id: int
    first: str
    first_reviewer: str
    second: str
    second_reviewer: str
    at_wall: float


@dataclass(frozen=True)
class SecondReviewStats(Agreement):
    """The ``n`` pairs of a first answer and the independent second one, given in the window."""

    waiting: int  # items in the queue for their second review now
    disagreements: list[Disagreement] = field(default_factory=list)  # the latest ones


@dataclass(frozen=True)
class ReviewStats:
    at_wall: float
    window_hours: float
    reviews: int  # in the window
    reviews_last_hour: int
    active_hours: int  # hours of the window with any review
    median_seconds: float | None
    reviewers: list[ReviewerStats]
    hours: list[HourLoad]  # the last 24 h, oldest first
    classes: list[ClassAgreement]
    second: SecondReviewStats

    @property
    def per_active_hour(self) -> float:
        return _share(self.reviews, self.active_hours)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at_wall": self.at_wall, "window_hours": self.window_hours, "reviews": self.reviews,
            "reviews_last_hour": self.reviews_last_hour, "active_hours": self.active_hours,
            "per_active_hour": round(self.per_active_hour, 2), "median_seconds": self.median_seconds,
            "reviewers": [{"username": r.username, "reviews": r.reviews, "active_hours": r.active_hours,
                           "per_active_hour": round(r.per_active_hour, 2), "median_seconds": r.median_seconds}
                          for r in self.reviewers],
            "hours": [{"start_wall": h.start_wall, "arrivals": h.arrivals, "reviews": h.reviews} for h in self.hours],
            "classes": [{"verdict": c.verdict, "n": c.n, "agree": c.agree, "rate": round(c.rate, 4),
                         "agree_good_defect": c.agree_good_defect,
                         "good_defect_rate": round(c.good_defect_rate, 4), "answers": c.answers}
                        for c in self.classes],
            "second_review": {
                "pairs": self.second.n, "agree_good_defect": self.second.agree_good_defect,
                "agree_class": self.second.agree, "good_defect_rate": round(self.second.good_defect_rate, 4),
                "class_rate": round(self.second.rate, 4), "waiting": self.second.waiting,
                "disagreements": [vars(d) for d in self.second.disagreements]},
        }


def _floor(value: Any, dialect: str) -> Any:
    """floor() of a non-negative expression as an integer. CAST truncates on SQLite but rounds on PostgreSQL, which
    has floor() (SQLite only with its optional math functions)."""
    if dialect == "sqlite":
        return cast(value, Integer)
    return cast(func.floor(value), Integer)


def _hour_of(column: Any, dialect: str) -> Any:
    """The hour bucket (epoch hours) of a wall-clock column."""
    return _floor(column / HOUR, dialect)


def _weighted_median(histogram: list[tuple[float, int]]) -> float | None:
    """The median of values given as (value, count), sorted by value."""
    total = sum(n for _, n in histogram)
    if not total:
        return None
    lo, hi, seen = (total - 1) // 2, total // 2, 0
    low = high = None
    for value, n in histogram:
        if low is None and seen + n > lo:
            low = value
        if seen + n > hi:
            high = value
            break
        seen += n
    assert low is not None and high is not None
    return round((low + high) / 2, 1)


@dataclass
class _Window:
    """The window's reviews, folded into what the page shows."""

    reviews: int = 0
    last_hour: int = 0
    by_reviewer: dict[str, int] = field(default_factory=dict)
    hours_of: dict[str, set[int]] = field(default_factory=dict)
    per_hour: dict[int, int] = field(default_factory=dict)
    medians: dict[str | None, float | None] = field(default_factory=dict)  # None: everyone


def _window(s: Session, since: float, now: float, dialect: str) -> _Window:
    """The window's reviews in two grouped reads over ``ix_reviews_created_wall``: counts by reviewer and hour, and
    the histogram of time spent by reviewer at 0.1 s (the resolution the console records; medians from it are
    exact at what the page shows). Medians by SQL window functions took several times longer on SQLite."""
    out = _Window()
    in_window = ReviewRow.created_wall >= since
    hour = _hour_of(ReviewRow.created_wall, dialect)
    for who, h, n in s.execute(select(ReviewRow.reviewer, hour, func.count()).where(in_window)
                               .group_by(ReviewRow.reviewer, hour)):
        out.reviews += n
        out.by_reviewer[who] = out.by_reviewer.get(who, 0) + n
        out.hours_of.setdefault(who, set()).add(int(h))
        out.per_hour[int(h)] = out.per_hour.get(int(h), 0) + n
    out.last_hour = int(s.scalar(select(func.count()).select_from(ReviewRow)
                                 .where(ReviewRow.created_wall >= now - HOUR)) or 0)
    tenths = _floor(ReviewRow.seconds_spent * 10 + 0.5, dialect)  # seconds_spent >= 0 (Reviews.add)
    histogram: dict[str, list[tuple[float, int]]] = {}
    for who, seconds, n in s.execute(select(ReviewRow.reviewer, tenths, func.count())
                                     .where(in_window, ReviewRow.seconds_spent.is_not(None))
                                     .group_by(ReviewRow.reviewer, tenths)):
        histogram.setdefault(who, []).append((seconds / 10, int(n)))
    everyone: dict[float, int] = {}
    for who, values in histogram.items():
        values.sort()
        out.medians[who] = _weighted_median(values)
        for value, n in values:
            everyone[value] = everyone.get(value, 0) + n
    out.medians[None] = _weighted_median(sorted(everyone.items()))
    return out


def _workload(s: Session, window: _Window, since: float, now: float, dialect: str) -> list[HourLoad]:
    """Arrivals and reviews per hour of the last 24 h, oldest first (one grouped scan of the items' arrival times)."""
    arrival_hour = _hour_of(ReviewItemRow.received_wall, dialect).label("hour")
    arrivals: dict[int, int] = {int(h): int(n) for h, n in s.execute(
        select(arrival_hour, func.count()).where(ReviewItemRow.received_wall >= now - 24 * HOUR)
        .group_by(arrival_hour))}
    last = int(now // HOUR)
    # an hour only partly inside a shorter window counts the reviews the window holds
    return [HourLoad(start_wall=h * HOUR, arrivals=arrivals.get(h, 0),
                     reviews=window.per_hour.get(h, 0) if (h + 1) * HOUR > since else 0)
            for h in range(last - 23, last + 1)]


def model_agreement(s: Session, since: float) -> list[ClassAgreement]:
    """Per model verdict: the items whose final answer (latest review) was given since ``since``, in one grouped
    query that starts from the window's reviews, so its cost follows the window, not the whole history."""
    newer = aliased(ReviewRow)
    query = (select(ReviewItemRow.verdict, ReviewRow.final_verdict, func.count())
             .select_from(ReviewRow)
             .join(ReviewItemRow, ReviewItemRow.id == ReviewRow.item_id)
             .where(ReviewRow.created_wall >= since,
                    ~exists().where(newer.item_id == ReviewRow.item_id, newer.id > ReviewRow.id))
             .group_by(ReviewItemRow.verdict, ReviewRow.final_verdict))
    rows: dict[str, dict[str, int]] = {}
    for verdict, final, n in s.execute(query):
        rows.setdefault(str(verdict), {})[str(final)] = int(n)
    out = []
    for verdict, answers in sorted(rows.items(), key=lambda kv: (kv[0] != GOOD, kv[0])):
        same_side = sum(n for final, n in answers.items() if (final == GOOD) == (verdict == GOOD))
        out.append(ClassAgreement(verdict=verdict, n=sum(answers.values()), agree=answers.get(verdict, 0),
                                  agree_good_defect=same_side, answers=dict(sorted(answers.items()))))
    return out


def second_review_agreement(s: Session, since: float, disagreements: int = 20) -> SecondReviewStats:
    """Each second review given since ``since`` against the first answer before it (the latest non-second review of
    the item), read in one query (the correlated lookup runs once per second review, through
    ``ix_reviews_item_id``)."""
    second, first, earlier = aliased(ReviewRow), aliased(ReviewRow), aliased(ReviewRow)
    first_id = (select(func.max(earlier.id)).where(earlier.item_id == second.item_id, earlier.id < second.id,
                                                   earlier.second_review.is_(False))
                .correlate(second).scalar_subquery())
    pairs = s.execute(select(second.item_id, first.final_verdict, first.reviewer, second.final_verdict,
                             second.reviewer, second.created_wall)
                      .join(first, first.id == first_id)
                      .where(second.created_wall >= since, second.second_review.is_(True))).all()
    waiting = s.scalar(select(func.count()).select_from(ReviewItemRow).where(
        ReviewItemRow.status == STATUS_PENDING, ReviewItemRow.second_review_of.is_not(None))) or 0
    differ = sorted((p for p in pairs if p[1] != p[3]), key=lambda p: p[5], reverse=True)[:disagreements]
    return SecondReviewStats(
        n=len(pairs), agree_good_defect=sum((a == GOOD) == (b == GOOD) for _, a, _, b, _, _ in pairs),
        agree=sum(a == b for _, a, _, b, _, _ in pairs), waiting=int(waiting),
        disagreements=[Disagreement(item_id=i, first=a, first_reviewer=ra, second=b, second_reviewer=rb, at_wall=at)
                       for i, a, ra, b, rb, at in differ])


def review_stats(store: Store, window_hours: float = 24.0, now: float | None = None) -> ReviewStats:
    """Everything the stats page shows (see the module doc); ``window_hours`` bounds rate and median time."""
    now = time.time() if now is None else now
    since = now - window_hours * HOUR
    dialect = store.engine.dialect.name
    with store.session() as s:
        window = _window(s, since, now, dialect)
        reviewers = sorted((ReviewerStats(username=who, reviews=n, active_hours=len(window.hours_of[who]),
                                          median_seconds=window.medians.get(who))
                            for who, n in window.by_reviewer.items()), key=lambda r: (-r.reviews, r.username))
        return ReviewStats(
            at_wall=now, window_hours=window_hours, reviews=window.reviews, reviews_last_hour=window.last_hour,
            active_hours=len(window.per_hour), median_seconds=window.medians.get(None), reviewers=reviewers,
            hours=_workload(s, window, since, now, dialect), classes=model_agreement(s, since),
            second=second_review_agreement(s, since))
