"""Admin only: the export of reviewed items, the user list and the audit log."""

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
from edge.station.views.common import Console


def router(console: Console) -> APIRouter:
    api = APIRouter(dependencies=[Depends(require_admin)])  # every route here: 403 for reviewers
    store = console.store

    @api.get("/admin")
    def admin_page(request: Request) -> Response:
        return console.render(request, "admin.html", {
            "counts": store.queue.counts(), "users": users.list_users(store), "audit": store.audit.recent(100),
            "console_counters": dict(console.counters)})

    @api.get("/api/export")
    async def export(format: Literal["coco", "jsonl"] = "coco") -> Response:
        """Reviewed items as a zip: images plus COCO ``annotations.json`` or ``items.jsonl``."""
        path = await run_in_threadpool(export_zip, store, format)
        return FileResponse(path, media_type="application/zip", filename=f"lineside-reviewed-{format}.zip",
                            background=BackgroundTask(path.unlink, missing_ok=True))

    @api.get("/api/audit")
    def audit_log(limit: int = Query(100, ge=1, le=1000), item_id: int | None = None,
                  username: str | None = None) -> list[dict[str, Any]]:
        return [dataclasses.asdict(e) for e in store.audit.recent(limit, item_id, username)]

    @api.get("/api/users")
    def api_users() -> list[dict[str, Any]]:
        return [dataclasses.asdict(u) for u in users.list_users(store)]

    return api
