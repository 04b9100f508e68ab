"""The risk audit for every logged-in user: a page per line and its JSON twin (see ``edge.station.risk_audit``).

Reviewers see it too, not only admins: they are the ones whose answers feed it, and an alarm is everyone's
business on the line. Both routes recompute the figures (a person asked); the banner on every other page uses the
monitor's cached ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from edge.station.risk_audit import AuditMonitor, AuditSnapshot, waiting_sampled
from edge.station.views.common import Console


def snapshot_json(snap: AuditSnapshot) -> dict[str, Any]:
    return {"at_wall": snap.at_wall, "confidence": snap.lines[0].confidence if snap.lines else None,
            "alarm": [a.line_id for a in snap.alarms], "warning": [a.line_id for a in snap.warnings],
            "lines": [a.as_dict() for a in snap.lines]}


def router(console: Console, monitor: AuditMonitor) -> APIRouter:
    api = APIRouter()  # the session guard already refuses anyone not logged in (401 for /api/, login page else)

    @api.get("/audit")
    def audit_page(request: Request) -> Response:
        snap = monitor.snapshot(max_age_s=0)
        waiting = waiting_sampled(console.store)
        known = {a.line_id for a in snap.lines}
        return console.render(request, "audit.html", {
            "snap": snap, "counts": console.store.queue.status_counts(), "waiting": waiting,
            "waiting_total": sum(waiting.values()), "waiting_only": sorted(set(waiting) - known)})

    @api.get("/api/risk-audit")
    async def audit_json() -> dict[str, Any]:
        """Per line: n, errors, class_errors, rate with its 95 % interval, α and state (ok/warning/alarm/none)."""
        return snapshot_json(await run_in_threadpool(monitor.snapshot, 0))

    return api
