"""The stats page and its JSON twin, for every logged-in user (see ``edge.station.stats`` for what each figure is)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from edge.station.stats import review_stats
from edge.station.views.common import Console

MAX_WINDOW_HOURS = 24 * 31


def router(console: Console) -> APIRouter:
    api = APIRouter()

    @api.get("/stats")
    def stats_page(request: Request, hours: float = Query(24.0, gt=0, le=MAX_WINDOW_HOURS)) -> Response:
        stats = review_stats(console.store, hours)
        peak = max([max(h.arrivals, h.reviews) for h in stats.hours] + [1])
        return console.render(request, "stats.html", {
            "stats": stats, "peak": peak, "counts": console.store.queue.status_counts(),
            "second_review_fraction": console.second_review_fraction})

    @api.get("/api/stats/reviews")
    async def stats_json(hours: float = Query(24.0, gt=0, le=MAX_WINDOW_HOURS)) -> dict[str, Any]:
        """Review rate, median time per item, hourly workload, model-vs-operator and second-review agreement."""
        return (await run_in_threadpool(review_stats, console.store, hours)).as_dict()

    return api
