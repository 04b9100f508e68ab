"""Live arrivals for the queue page: Server-Sent Events, so an open queue learns of new items without reloading.

Why SSE and a poll: items reach the database from the ingest thread (or another process), so the console has no
event to forward; reading the highest item id once a second is a primary-key lookup, cheap for any number of open
pages. The queue page does not insert rows by itself (its order and paging are the server's): it shows "n new items
— press r to show" and keeps the reviewer's selection where it was.

One stream per open queue page, logged-in users only (the session guard answers 401 before this runs). Each event::

    id: <highest item id seen>/<highest audit row id seen>
    event: arrivals
    data: {"max_id": 812, "new": 3, "asked_again": 2, "pending": 120}

``new`` counts the items that arrived since the previous event *and* match the page's filter (the same query
parameters as the queue); ``asked_again`` the items under the filter that were sent back for another answer since
(`lineside train --recheck`: old ids, back to pending, each with a ``recheck`` audit row — the audit log's ids are
the second watermark, read in the same query). A stream ends when the client goes away, the station stops, after
``max_events`` events or after ``timeout_s`` (at most ``STREAM_MAX_S``); the browser then reconnects by itself after
``retry`` and sends the last id it saw (``Last-Event-ID``), so nothing is counted twice or missed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from edge.station.auth import current_user
from edge.station.store.filters import QueueFilter, Sort, StatusFilter
from edge.station.views.common import Console
from edge.station.views.review import queue_filter

POLL_S = 1.0
KEEPALIVE_S = 15.0  # a comment line now and then, so proxies and the browser keep an idle stream open
STREAM_MAX_S = 300.0  # then the browser reconnects: no stream outlives a restarted proxy or a lost client for long
RETRY_MS = 2000


def _event(max_id: int, audit_id: int, new: int, asked_again: int, pending: int) -> str:
    data = json.dumps({"max_id": max_id, "new": new, "asked_again": asked_again, "pending": pending})
    return f"id: {max_id}/{audit_id}\nevent: arrivals\ndata: {data}\n\n"


def _last_event_id(header: str) -> tuple[int, int | None]:
    """The item and audit watermarks of a reconnect's ``Last-Event-ID`` ("812/40"; a bare "812" from a stream of
    before the audit watermark); (0, None) for anything else."""
    item, _, audit = header.partition("/")
    if not item.isdigit() or (audit and not audit.isdigit()):
        return 0, None
    return int(item), int(audit) if audit else None


def router(console: Console) -> APIRouter:
    api = APIRouter()
    queue = console.store.queue

    async def arrivals(request: Request, flt: QueueFilter, after_id: int, after_audit_id: int | None,
                       max_events: int | None, timeout_s: float) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        seen, sent = after_id, 0
        # without a starting point the stream announces what is asked again from now on, not the log's past
        seen_audit = after_audit_id if after_audit_id is not None else (await run_in_threadpool(queue.watermarks))[1]
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while not console.closing.is_set() and not await request.is_disconnected():
            top, top_audit = await run_in_threadpool(queue.watermarks)
            # every answer writes an audit row: most moves of the audit watermark ask nothing again
            asked = (await run_in_threadpool(queue.count_asked_again, flt, seen_audit, top_audit, seen)
                     if top_audit > seen_audit else 0)
            if top > seen or asked:
                new = await run_in_threadpool(queue.count_arrivals, flt, seen, top) if top > seen else 0
                pending = (await run_in_threadpool(queue.status_counts))["by_status"]["pending"]
                seen, seen_audit = max(seen, top), top_audit
                yield _event(seen, seen_audit, new, asked, pending)
                sent += 1
                quiet_since = time.monotonic()
                if max_events is not None and sent >= max_events:
                    return
            else:
                seen_audit = max(seen_audit, top_audit)
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    @api.get("/api/events")
    def events(request: Request, after_id: int = Query(0, ge=0),
               after_audit_id: int | None = Query(None, ge=0, description="count items asked again after this "
                                                  "audit row (default: from the stream's start)"),
               status: StatusFilter = "pending",
               line: str | None = None, verdict: str | None = None, reason: str | None = None,
               since: str | None = None, until: str | None = None, sort: Sort = "uncertainty",
               max_events: int | None = Query(None, ge=1, description="end the stream after this many events"),
               timeout_s: float = Query(STREAM_MAX_S, gt=0, le=STREAM_MAX_S,
                                        description="end the stream after this long (the browser reconnects)"),
               ) -> StreamingResponse:
        """New items as Server-Sent Events (``event: arrivals``), counted under the queue's filter parameters."""
        current_user(request)
        flt = queue_filter(status, line, verdict, reason, since, until, sort)
        last_item, last_audit = _last_event_id(request.headers.get("last-event-id", ""))
        after_id = max(after_id, last_item)  # a reconnect: go on from what the browser saw last
        if last_audit is not None:
            after_audit_id = max(after_audit_id or 0, last_audit)
        return StreamingResponse(arrivals(request, flt, after_id, after_audit_id, max_events, timeout_s),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return api
