"""``/api/summaries``: the lines' decision summaries as JSON, for every logged-in user (the UI is another page's job).

``GET /api/summaries`` lists the lines that sent summaries; ``GET /api/summaries?line=L&since=&until=&bucket_s=
&offset_s=`` adds up line L's minutes in [since, until) (epoch seconds; default the last 24 h) per bucket (default
one hour): frames, auto and routed counts per verdict, defects and defect rate, routing reasons, model versions.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge.station.summaries import SummaryQueryError, line_summaries, summary_lines
from edge.station.views.common import Console

log = logging.getLogger(__name__)


def router(console: Console) -> APIRouter:
    api = APIRouter()  # the session guard refuses anyone not logged in

    @api.get("/api/summaries")
    async def summaries(line: str | None = None, since: float | None = None, until: float | None = None,
                        bucket_s: int = 3600, offset_s: int = 0) -> JSONResponse:
        if line is None:
            return JSONResponse({"lines": await run_in_threadpool(summary_lines, console.store)})
        now = time.time()
        until_ = now if until is None else until
        since_ = until_ - 86400 if since is None else since
        try:
            body = await run_in_threadpool(line_summaries, console.store, line, since_, until_, bucket_s, offset_s)
        except SummaryQueryError as exc:
            console.counters["bad_summary_queries"] += 1
            log.warning("console: /api/summaries refused: %s", exc)
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(body)

    return api
