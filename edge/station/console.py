"""The operator console: a small server-rendered web app over the store, keyboard first.

Pages: the review queue (``/``) and one item (``/items/{id}``) with the frame, its region boxes as an SVG
overlay, captions, scores and the Accept / Reject / Relabel actions. JSON under ``/api/``. Images are served
by item id only, never by a path taken from the URL. Templates and static files ship inside the package;
nothing is loaded from the internet.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from edge.station.imagefiles import ImagePathError
from edge.station.store import ItemNotFound, ItemView, ReviewError, Store

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
GOOD_COLOR = "#3ddc84"
# High contrast on the dark frame background; no greens, green means "good".
PALETTE = ("#ff4d4f", "#ffb020", "#36cfc9", "#b37feb", "#ff85c0", "#40a9ff", "#ffd666", "#ff7a45", "#d3adf7")

CountersFn = Callable[[], Mapping[str, int]]


def class_color(name: str) -> str:
    """A stable, high-contrast colour per class name (the same on every page and every item)."""
    if name == "good":
        return GOOD_COLOR
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def humanize_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def clock(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


class ReviewIn(BaseModel):
    """A review as posted by the console form or an API client; the store checks decision and class."""

    model_config = ConfigDict(extra="ignore")

    decision: str
    defect_class: str | None = None
    reviewer: str = "operator"
    seconds_spent: float | None = None

    @field_validator("defect_class", "seconds_spent", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


def item_json(item: ItemView) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    data["top_caption"] = item.top_caption
    data["image_url"] = f"/images/{item.id}"
    data["latest_review"] = dataclasses.asdict(item.latest_review) if item.latest_review else None
    return data


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def _review_payload(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(422, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body must be a JSON object")
        return data
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def create_app(store: Store, storage_dir: Path | str, ingest_counters: CountersFn | None = None) -> FastAPI:
    """The console app over ``store``; ``ingest_counters`` (if given) feeds /api/stats."""
    storage_dir = Path(storage_dir)
    app = FastAPI(title="lineside station", docs_url="/api/docs", redoc_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(class_color=class_color)
    templates.env.filters.update(age=humanize_age, clock=clock)

    def _item_or_404(item_id: int) -> ItemView:
        item = store.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no review item {item_id}")
        return item

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, limit: int = Query(100, ge=1, le=1000)) -> Response:
        return templates.TemplateResponse(request, "queue.html", {
            "items": store.queue(limit=limit), "counts": store.counts(), "now": time.time()})

    @app.get("/items/{item_id}", response_class=HTMLResponse)
    def item_page(request: Request, item_id: int) -> Response:
        item = _item_or_404(item_id)
        label_size = max(10.0, max(item.width, item.height) / 28)
        return templates.TemplateResponse(request, "item.html", {
            "item": item, "counts": store.counts(), "now": time.time(), "label_size": label_size,
            "scores": sorted(item.class_scores.items(), key=lambda kv: kv[1], reverse=True)})

    @app.post("/items/{item_id}/review")
    async def post_review(request: Request, item_id: int) -> Response:
        try:
            review = ReviewIn.model_validate(await _review_payload(request))
        except ValidationError as exc:
            raise HTTPException(422, _validation_message(exc)) from None
        try:
            await run_in_threadpool(store.add_review, item_id, review.decision, review.reviewer,
                                    review.defect_class, review.seconds_spent)
        except ItemNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from None
        next_id = await run_in_threadpool(store.next_pending_id)
        return RedirectResponse("/" if next_id is None else f"/items/{next_id}", status_code=303)

    @app.get("/images/{item_id}")
    def image(item_id: int) -> Response:
        try:
            path = store.image_file(item_id)
        except ImagePathError as exc:
            log.error("console: %s", exc)
            raise HTTPException(404, f"no image for item {item_id}") from None
        if path is None:
            raise HTTPException(404, f"no review item {item_id}")
        if not path.is_file():
            log.error("console: image file of item %d is missing: %s", item_id, path)
            raise HTTPException(404, f"image file of item {item_id} is missing")
        return FileResponse(path, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400, immutable"})

    @app.get("/api/items")
    def api_items(status: Literal["pending", "reviewed", "all"] = "pending",
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        items = store.list_items(None if status == "all" else status, limit=limit, offset=offset)
        return [item_json(item) for item in items]

    @app.get("/api/items/{item_id}")
    def api_item(item_id: int) -> dict[str, Any]:
        return item_json(_item_or_404(item_id))

    @app.get("/api/stats")
    def api_stats() -> dict[str, Any]:
        return {"counts": store.counts(),
                "ingest": dict(ingest_counters()) if ingest_counters is not None else None,
                "storage_dir": str(storage_dir)}

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            store.ping()
        except Exception as exc:
            log.error("console: health check failed: %s", exc)
            return JSONResponse({"status": "error", "detail": f"database: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
