"""What every route group shares: the Console context, template helpers, request parsing."""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from edge.station.auth import SessionCodec, csrf_token
from edge.station.static_files import static_url
from edge.station.store import Store
from edge.station.store.queue import ItemNotFound, LeaseConflict
from edge.station.thumbnails import ThumbnailCache
from edge.station.views.work import Skips
from edge.vlm.vocabulary import VocabularyError, load_vocabulary

HERE = Path(__file__).resolve().parent.parent
GOOD_COLOR = "#3ddc84"
# High contrast on the dark frame background; no greens, green means "good".
PALETTE = ("#ff4d4f", "#ffb020", "#36cfc9", "#b37feb", "#ff85c0", "#40a9ff", "#ffd666", "#ff7a45", "#d3adf7")

CountersFn = Callable[[], Mapping[str, int]]
COUNTS_MAX_AGE_S = 2.0

T = TypeVar("T")


@lru_cache(maxsize=1)
def _known_colors() -> dict[str, str]:
    """The default vocabulary's defect classes, each with a colour of its own (in the vocabulary's order): a hash
    alone gave two of its five classes (patch, texture) the same one."""
    try:
        defects = load_vocabulary().defect_classes
    except VocabularyError:
        return {}
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(defects)}


def class_color(name: str) -> str:
    """A stable, high-contrast colour per class name (the same on every page and every item): the default
    vocabulary's classes each their own, any other class by a hash of its name."""
    if name == "good":
        return GOOD_COLOR
    known = _known_colors()
    if name in known:
        return known[name]
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


def hour(wall: float) -> str:
    return time.strftime("%H", time.localtime(wall))


def _page_globals(request: Request) -> dict[str, Any]:
    """Every page knows who is logged in and the CSRF token for its forms and fetches."""
    state = request.scope.get("state", {})
    return {"user": state.get("user"), "csrf_token": csrf_token(request) if "session" in state else ""}


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates", context_processors=[_page_globals])
    templates.env.globals.update(class_color=class_color, static_url=static_url)
    templates.env.filters.update(age=humanize_age, clock=clock, hour=hour)
    return templates


@dataclass
class Console:
    """The console's shared state, handed to each route group."""

    store: Store
    storage_dir: Path
    templates: Jinja2Templates
    codec: SessionCodec
    lease_minutes: float
    counters: Counter[str]  # csrf_rejected, unauthenticated, login_failed, lease_conflicts
    ingest_counters: CountersFn | None = None
    second_review_fraction: float = 0.0
    # set when the station stops: live streams end at once instead of holding the web server's shutdown
    closing: threading.Event = field(default_factory=threading.Event)
    skips: Skips = field(default_factory=Skips)  # what each reviewer skipped (views.work)
    thumbs: ThumbnailCache = field(default_factory=ThumbnailCache)  # the grids' small images

    _counts: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)

    def status_counts(self, max_age_s: float = COUNTS_MAX_AGE_S) -> dict[str, Any]:
        """The header's "N pending / M reviewed", at most ``max_age_s`` old: counting 100,000 items costs ~20 ms,
        and a reviewer loads a page per item; the queue page's live stream keeps its own figure fresh."""
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > max_age_s:
            self._counts = (now, self.store.queue.status_counts())
        return self._counts[1]

    def render(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def lease_conflict(self, exc: Exception) -> HTTPException:
        """Someone else holds the lease: counted, and a 409 saying who and until when."""
        self.counters["lease_conflicts"] += 1
        return HTTPException(409, str(exc))

    async def leasing(self, call: Callable[..., T], *args: Any) -> T:
        """A store call that takes or renews leases, off the event loop: 404 for an item that is not there, 409
        (counted) when someone else holds it."""
        try:
            return await run_in_threadpool(call, *args)
        except ItemNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except LeaseConflict as exc:
            raise self.lease_conflict(exc) from None


class AnswerIn(BaseModel):
    """An answer as a page or an API client posts it; the store checks decision, class and comment."""

    model_config = ConfigDict(extra="ignore")  # a client's "reviewer" is ignored: the session says who

    decision: str
    defect_class: str | None = None
    seconds_spent: float | None = None
    comment: str | None = None

    @field_validator("defect_class", "seconds_spent", "comment", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def wants_json(request: Request) -> bool:
    """The console's own fetch() calls ask for JSON; plain form posts and API redirects keep the 303."""
    return "application/json" in request.headers.get("accept", "")


async def payload(request: Request) -> dict[str, Any]:
    """A JSON object or a urlencoded/multipart form, as a dict of strings (the CSRF field dropped)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(422, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body must be a JSON object")
    else:
        form = await request.form()
        data = {key: value for key, value in form.items() if isinstance(value, str)}
    data.pop("csrf_token", None)
    return data
