"""Admin only: the export of reviewed items, the user list and the audit log (views.audit_log makes it readable)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from edge.station import users
from edge.station.auth import require_admin
from edge.station.export import export_zip
from edge.station.store.audit import ACTIONS
from edge.station.views.audit_log import readable
from edge.station.views.common import Console

AUDIT_ROWS = 200


def router(console: Console) -> APIRouter:
    api = APIRouter(dependencies=[Depends(require_admin)])  # every route here: 403 for reviewers
    store = console.store

    @api.get("/admin")
    def admin_page(request: Request, user: str = "", action: str = "",
                   limit: int = Query(AUDIT_ROWS, ge=1, le=1000)) -> Response:
        """Export, users, and the audit log (filtered by user and action; lease runs folded)."""
        entries = store.audit.recent(limit, username=user or None, action=action or None)
        people = users.list_users(store)
        return console.render(request, "admin.html", {
            "counts": store.queue.counts(), "users": people, "audit": readable(entries), "audit_rows": len(entries),
            "limit": limit, "console_counters": dict(console.counters), "actions": ACTIONS,
            "flt": {"user": user, "action": action}, "usernames": sorted(u.username for u in people)})

    @api.get("/api/export")
    async def export(format: Literal["coco", "jsonl"] = "coco") -> Response:
        """Reviewed items as a zip: images plus COCO ``annotations.json`` or ``items.jsonl``."""
        path = await run_in_threadpool(export_zip, store, format)
        return FileResponse(path, media_type="application/zip", filename=f"lineside-reviewed-{format}.zip",
                            background=BackgroundTask(path.unlink, missing_ok=True))

    @api.get("/api/audit")
    def audit_log(limit: int = Query(100, ge=1, le=1000), item_id: int | None = None,
                  username: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        return [dataclasses.asdict(e) for e in store.audit.recent(limit, item_id, username, action)]

    @api.get("/api/users")
    def api_users() -> list[dict[str, Any]]:
        return [dataclasses.asdict(u) for u in users.list_users(store)]

    return api
