"""Look-alike groups in the console: the grid of a group's waiting frames, one key for all of them, taking single
frames out first; and the thumbnails the grid shows.

Opening a group leases its waiting members to the reviewer (store.group_queue: one lease per frame, so two
reviewers never hold one frame); the page renews them while it stays open. An answer (``a`` / ``r`` / ``l``) is
``Reviews.answer_group``: a review row and an audit row per frame. A frame taken out (``x``) is a single item
again, still the reviewer's: after the group's answer it opens next, then any other taken-out frame.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError, field_validator

from edge.station.auth import current_user
from edge.station.store import ItemNotFound, LeaseConflict, ReviewError
from edge.station.store.imagefiles import ImagePathError
from edge.station.thumbnails import ThumbnailError
from edge.station.views.common import AnswerIn, Console, class_color, payload, validation_message, wants_json
from edge.station.views.work import claim_next_url

log = logging.getLogger(__name__)


def id_list(value: Any) -> list[int]:
    """``"12,15"`` (a form field) or ``[12, 15]`` as item ids; anything else is no id."""
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return [int(p) for p in parts if str(p).strip().isdigit()][:200]


class GroupAnswerIn(AnswerIn):
    """A group's answer as the page posts it; ``taken_out``: the frames taken out of it on the page, in order."""

    taken_out: list[int] = []

    @field_validator("taken_out", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[int]:
        return id_list(value)


def held_url(console: Console, username: str, item_ids: list[int]) -> str | None:
    """The first of ``item_ids`` still waiting and leased to ``username`` (a frame they took out), with the rest
    to come after it; None when none is."""
    queue = console.store.queue
    for i, item_id in enumerate(item_ids):
        lease = queue.lease_of(item_id)
        item = queue.get_item(item_id)
        if item is not None and item.status == "pending" and lease is not None and lease.username == username:
            rest = ",".join(str(x) for x in item_ids[i + 1:])
            return f"/items/{item_id}" + (f"?then={rest}" if rest else "")
    return None


def router(console: Console) -> APIRouter:
    api = APIRouter()
    groups, queue = console.store.groups, console.store.queue

    @api.get("/groups/{group_id}")
    def group_page(request: Request, group_id: int) -> Response:
        user = current_user(request)
        try:
            view = groups.claim(group_id, user.username, console.lease_minutes)
        except ItemNotFound:
            return RedirectResponse("/", 303)  # answered meanwhile: back to the queue
        except LeaseConflict as exc:
            console.counters["lease_conflicts"] += 1
            return console.render(request, "group.html", {"group": None, "conflict": str(exc),
                                                          "counts": console.status_counts()}, status_code=409)
        classes = view.members[0].classes
        label_size = max(10.0, max(view.members[0].width, view.members[0].height) / 22)
        return console.render(request, "group.html", {
            "group": view, "conflict": None, "counts": console.status_counts(), "classes": classes,
            "colors": {name: class_color(name) for name in classes}, "label_size": label_size,
            "lease_minutes": console.lease_minutes,
            "unc_range": (min(m.uncertainty for m in view.members), max(m.uncertainty for m in view.members))})

    @api.post("/groups/{group_id}/review")
    async def answer(request: Request, group_id: int) -> Response:
        user = current_user(request)
        try:
            body = GroupAnswerIn.model_validate(await payload(request))
        except ValidationError as exc:
            raise HTTPException(422, validation_message(exc)) from None
        try:
            saved = await run_in_threadpool(
                lambda: console.store.reviews.answer_group(
                    group_id, body.decision, user.username, body.defect_class, body.seconds_spent,
                    comment=body.comment, second_review_fraction=console.second_review_fraction))
        except ReviewError as exc:
            raise HTTPException(422, str(exc)) from None
        except LeaseConflict as exc:
            raise console.lease_conflict(exc) from None
        target = await run_in_threadpool(held_url, console, user.username, body.taken_out)
        if target is None:
            target = await run_in_threadpool(claim_next_url, console.store, console.skips, user.username,
                                             console.lease_minutes)
        if wants_json(request):
            return JSONResponse({"reviews": [dataclasses.asdict(r) for r in saved], "next_url": target})
        return RedirectResponse(target, 303)

    @api.post("/groups/{group_id}/take-out")
    async def take_out(request: Request, group_id: int) -> dict[str, Any]:
        """Make one frame of the group a single item again, still mine (the grid's ``x``)."""
        user = current_user(request)
        ids = id_list((await payload(request)).get("item_id", ""))
        if not ids:
            raise HTTPException(422, "item_id: the frame to take out")
        try:
            await run_in_threadpool(groups.take_out, group_id, ids[0], user.username, console.lease_minutes)
        except ItemNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except LeaseConflict as exc:
            raise HTTPException(409, str(exc)) from None
        return {"item_id": ids[0], "group_id": None}

    @api.post("/groups/{group_id}/skip")
    async def skip(request: Request, group_id: int) -> Response:
        """Give the group back and take the next work; it comes again only when nothing else waits."""
        user = current_user(request)
        await run_in_threadpool(groups.release, group_id, user.username)
        console.skips.skip_group(user.username, group_id)
        target = await run_in_threadpool(claim_next_url, console.store, console.skips, user.username,
                                         console.lease_minutes)
        return JSONResponse({"next_url": target}) if wants_json(request) else RedirectResponse(target, 303)

    @api.post("/api/groups/{group_id}/lease")
    async def renew(request: Request, group_id: int) -> dict[str, Any]:
        """Renew my leases on the group's frames (the page calls this while it stays open)."""
        user = current_user(request)
        renewed = await console.leasing(groups.renew, group_id, user.username, console.lease_minutes)
        return {"item_ids": renewed, "expires_wall": time.time() + console.lease_minutes * 60}

    @api.get("/thumbs/{item_id}")
    def thumb(item_id: int) -> Response:
        item = queue.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no review item {item_id}")
        try:
            path = queue.image_file(item_id)
            if path is None:
                raise HTTPException(404, f"no review item {item_id}")
            data = console.thumbs.get(item_id, path, item.width, item.height)
        except (ImagePathError, ThumbnailError) as exc:
            log.error("console: thumbnail of item %d: %s", item_id, exc)
            raise HTTPException(404, f"no image for item {item_id}") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400, immutable"})

    return api
