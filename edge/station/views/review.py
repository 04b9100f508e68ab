"""Reviewing: the queue, one item, its image, the review / lease / undo actions and their JSON twins.

The reviewer is always the logged-in user. Opening a pending item leases it to them (``lease_minutes``, renewed
by the page while it stays open), so the queue and "next" of everyone else skip it; a review of an item
someone else holds is refused with 409. Images are served by item id only, never by a path from the URL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError, field_validator

from edge.station.auth import current_user
from edge.station.store import ItemNotFound, ItemView, LeaseConflict, ReviewError
from edge.station.store.filters import QueueFilter, Sort, StatusFilter
from edge.station.store.imagefiles import ImagePathError
from edge.station.store.queue import CursorError, parse_cursor
from edge.station.store.reviews import model_boxes
from edge.station.tables import STATUS_PENDING
from edge.station.views.common import AnswerIn, Console, class_color, payload, validation_message, wants_json
from edge.station.views.groups import held_url, id_list
from edge.station.views.work import claim_next_url
from edge.transport.schema import HEATMAP_Z_MAX

log = logging.getLogger(__name__)

CHOICES_TTL_S = 60.0
REFERENCES = 4  # good frames of the line shown beside an item


class ReviewIn(AnswerIn):
    """A review as posted by the console or an API client; the store checks decision, class, boxes and comment.

    ``boxes`` is the operator's edited box list (a JSON array in a form field, or an array in a JSON body), absent
    or empty-string when they did not touch the boxes (the model's stand); ``[]`` means they deleted every box."""

    boxes: list[dict[str, Any]] | None = None

    @field_validator("boxes", mode="before")
    @classmethod
    def _boxes_from_form(cls, value: Any) -> Any:
        if value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("boxes is not JSON") from None
        return value


def item_json(item: ItemView) -> dict[str, Any]:
    data = dataclasses.asdict(item)
    data["regions"] = [r.model_dump() for r in item.regions]
    data["top_caption"] = item.top_caption
    data["image_url"] = f"/images/{item.id}"
    data["latest_review"] = dataclasses.asdict(item.latest_review) if item.latest_review else None
    return data


def _epoch(text: str | None, name: str) -> float | None:
    """A time filter from ``<input type=datetime-local>`` (local time) or plain epoch seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise HTTPException(422, f"{name}: not a time: {text!r} (use 2025-01-31T08:00 or epoch seconds)") from None


def queue_filter(status: StatusFilter = "pending", line: str | None = None, verdict: str | None = None,
                 reason: str | None = None, since: str | None = None, until: str | None = None,
                 sort: Sort = "uncertainty") -> QueueFilter:
    """FastAPI dependency: the queue filter from the query string (empty fields do not filter)."""
    return QueueFilter(status=status, line=line or None, verdict=verdict or None, reason=reason or None,
                       since=_epoch(since, "since"), until=_epoch(until, "until"), sort=sort)


def _cursor(after: str | None) -> tuple[float, int] | None:
    try:
        return parse_cursor(after) if after else None
    except CursorError as exc:
        raise HTTPException(422, str(exc)) from None


def router(console: Console) -> APIRouter:
    queue, reviews, api = console.store.queue, console.store.reviews, APIRouter()
    cached: dict[str, Any] = {"at": 0.0, "value": None}

    def choices() -> dict[str, list[str]]:
        """The filter drop-downs' values. They need scans of the whole table and change rarely (a new line or
        class), so they are kept for a minute rather than recomputed on every page of a busy queue."""
        if cached["value"] is None or time.monotonic() - cached["at"] > CHOICES_TTL_S:
            cached["value"], cached["at"] = queue.filter_choices(), time.monotonic()
        return cached["value"]

    def _item_or_404(item_id: int) -> ItemView:
        item = queue.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no review item {item_id}")
        return item

    @api.get("/")
    def queue_page(request: Request, after: str | None = None, limit: int = Query(50, ge=1, le=500),
                   status: StatusFilter = "pending", line: str | None = None, verdict: str | None = None,
                   reason: str | None = None, since: str | None = None, until: str | None = None,
                   sort: Sort = "uncertainty") -> Response:
        user = current_user(request)
        flt = queue_filter(status, line, verdict, reason, since, until, sort)
        # before the page: an item arriving (or asked again) in between is announced, not lost
        max_id, max_audit_id = queue.watermarks()
        page = queue.page(flt, user.username, limit=limit, after=_cursor(after))
        query = {k: v for k, v in request.query_params.items() if k != "after" and v}
        # the chosen value stays in its drop-down even when the cached list does not know it yet
        shown = {name: sorted(set(values) | ({chosen} if chosen else set()))
                 for (name, values), chosen in zip(choices().items(), (flt.line, flt.verdict, flt.reason),
                                                   strict=True)}
        return console.render(request, "queue.html", {
            "page": page, "items": page.items, "flt": flt, "query": query, "choices": shown,
            "counts": console.status_counts(), "now": time.time(), "first_page": after is None, "max_id": max_id,
            "max_audit_id": max_audit_id,
            "raw": {"since": since or "", "until": until or ""}})

    @api.post("/next")
    async def take_next(request: Request) -> Response:
        """Lease the head of the queue and open it (the queue's ``n`` key; with ``skip``, the item's ``s`` key:
        give that item back and take the next other one — skipped items come again only when nothing else
        waits)."""
        user = current_user(request)
        skip = id_list([(await payload(request)).get("skip")])
        if skip:
            await run_in_threadpool(queue.release, skip[0], user.username)
            console.skips.skip_item(user.username, skip[0])
        target = await run_in_threadpool(claim_next_url, console.store, console.skips, user.username,
                                         console.lease_minutes)
        return JSONResponse({"next_url": target}) if wants_json(request) else RedirectResponse(target, 303)

    @api.get("/items/{item_id}")
    def item_page(request: Request, item_id: int, then: str = "",
                  ahead_flag: str = Query("", alias="ahead")) -> Response:
        user = current_user(request)
        item = _item_or_404(item_id)
        lease, conflict = None, None
        # ?ahead=1: the next item as the page before fetched it ahead (<link rel=prefetch>), made without taking
        # its lease — the page takes it when it is shown — and kept a minute, so that the answer's navigation to
        # it needs no request. Only that navigation uses it (console.js); every other one gets a fresh page.
        ahead = ahead_flag == "1"
        held = queue.lease_of(item_id) if item.status == STATUS_PENDING else None
        if ahead:
            pass
        elif held is not None and held.username == user.username and \
                held.expires_wall - time.time() > console.lease_minutes * 30:
            lease = held  # just handed to me ("next"): fresh for over half its time, no write needed
        elif item.status == STATUS_PENDING:
            try:
                lease = queue.claim(item_id, user.username, console.lease_minutes)
            except LeaseConflict as exc:
                console.counters["lease_conflicts"] += 1
                conflict = str(exc)
        # the next item, fetched ahead: not this one, nor (for a page made ahead) the one the reviewer holds now
        peek = queue.peek_next(user.username, exclude=[item_id, *(queue.held_by(user.username) if ahead else [])])
        label_size = max(10.0, max(item.width, item.height) / 28)
        latest = item.latest_review
        # the boxes the editor starts from: the latest operator's when they edited them, else the model's regions;
        # an item waiting for its second review starts from the model's, so the second answer is independent
        operator = latest.boxes if latest is not None and not item.awaits_second_review else None
        boxes = operator if operator is not None else model_boxes(item.regions)
        response = console.render(request, "item.html", {
            "item": item, "counts": console.status_counts(), "now": time.time(), "label_size": label_size,
            "lease": lease, "conflict": conflict, "next_id": peek, "lease_minutes": console.lease_minutes,
            "scores": sorted(item.class_scores.items(), key=lambda kv: kv[1], reverse=True),
            "boxes": boxes, "boxes_source": "model" if operator is None else "operator",
            "colors": {name: class_color(name) for name in item.classes},
            "references": queue.good_references(item.line_id, REFERENCES, exclude=item_id),
            "heatmap_z_max": HEATMAP_Z_MAX, "then": ",".join(str(i) for i in id_list(then)),
            "claim_on_load": ahead and item.status == STATUS_PENDING})
        response.headers["Cache-Control"] = "private, max-age=60" if ahead else "no-cache"
        return response

    @api.post("/items/{item_id}/review")
    async def post_review(request: Request, item_id: int) -> Response:
        user = current_user(request)
        data = await payload(request)
        then = id_list(data.pop("then", ""))  # frames taken out of a group, still to answer
        try:
            review = ReviewIn.model_validate(data)
        except ValidationError as exc:
            raise HTTPException(422, validation_message(exc)) from None
        try:
            saved = await run_in_threadpool(
                lambda: reviews.add(item_id, review.decision, user.username, review.defect_class,
                                    review.seconds_spent, boxes=review.boxes, comment=review.comment,
                                    second_review_fraction=console.second_review_fraction))
        except ItemNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from None
        except LeaseConflict as exc:
            raise console.lease_conflict(exc) from None
        target = await run_in_threadpool(held_url, console, user.username, then)
        if target is None:
            target = await run_in_threadpool(claim_next_url, console.store, console.skips, user.username,
                                             console.lease_minutes, item_id)
        if wants_json(request):
            return JSONResponse({"review": dataclasses.asdict(saved), "next_url": target})
        return RedirectResponse(target, status_code=303)

    @api.post("/items/{item_id}/lease")
    @api.post("/api/items/{item_id}/lease")
    async def renew_lease(request: Request, item_id: int) -> dict[str, Any]:
        """Take or renew the lease (the item page calls this while it stays open)."""
        user = current_user(request)
        lease = await console.leasing(queue.claim, item_id, user.username, console.lease_minutes)
        return dataclasses.asdict(lease)

    @api.post("/undo")
    async def undo(request: Request) -> Response:
        """Take back my latest answer and reopen that item, or the group it was given to (the ``u`` key)."""
        user = current_user(request)
        try:
            undone = await run_in_threadpool(reviews.undo_last_answer, user.username, console.lease_minutes)
        except (LeaseConflict, ReviewError) as exc:
            raise HTTPException(409, str(exc)) from None
        if undone is None:
            raise HTTPException(409, f"{user.username} has no review to undo")
        target = f"/groups/{undone.group_id}" if undone.group_id is not None else f"/items/{undone.item_ids[0]}"
        return JSONResponse({"next_url": target}) if wants_json(request) else RedirectResponse(target, 303)

    @api.get("/images/{item_id}")
    def image(item_id: int) -> Response:
        try:
            path = queue.image_file(item_id)
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

    @api.get("/api/items")
    def api_items(request: Request, response: Response, status: Literal["pending", "reviewed", "all"] = "pending",
                  line: str | None = None, verdict: str | None = None, reason: str | None = None,
                  since: str | None = None, until: str | None = None, sort: Sort = "uncertainty",
                  after: str | None = None, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        """Queue items as JSON; the next page's cursor comes in the ``X-Next-Cursor`` header (``after=``)."""
        user = current_user(request)
        flt = queue_filter(status, line, verdict, reason, since, until, sort)
        page = queue.page(flt, user.username, limit=limit, after=_cursor(after), offset=offset)
        if page.next_cursor is not None:
            response.headers["X-Next-Cursor"] = page.next_cursor
        return [item_json(item) for item in page.items]

    @api.get("/api/items/{item_id}")
    def api_item(request: Request, item_id: int) -> dict[str, Any]:
        data = item_json(_item_or_404(item_id))
        lease = queue.lease_of(item_id)
        data["lease"] = dataclasses.asdict(lease) if lease else None
        return data

    @api.get("/api/stats")
    def api_stats() -> dict[str, Any]:
        return {"counts": queue.counts(),
                "ingest": dict(console.ingest_counters()) if console.ingest_counters is not None else None,
                "console": dict(console.counters),
                "storage_dir": str(console.storage_dir)}

    return api
