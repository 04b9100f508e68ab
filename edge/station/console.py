"""The operator console: a small server-rendered web app over the store, keyboard first.

This module only wires the parts together; each lives in its own module:

- ``auth``: session cookies, the login requirement and CSRF for every route (``SessionGuard``).
- ``views.account``: login / logout.  ``views.review``: the queue, one item, review / lease / undo, images,
  the JSON API.  ``views.groups``: a look-alike group's grid, answered with one key; thumbnails.
  ``views.work``: what a reviewer gets next, and what they skipped.  ``views.admin``: export, users, audit log.
  ``views.risk_audit_view``: the risk audit page and JSON (``risk_audit``: error rate of the sampled
  auto-decisions per line; its alarm banner is on every page).
  ``views.live``: the queue's live arrivals (Server-Sent Events).  ``views.stats_view``: the stats page and JSON
  (``stats``: review rate, time per item, workload, model-vs-operator and second-review agreement).
- ``store``: the database and image files, by role (ingest, queue and leases, reviews, audit, look-alike groups).
  ``thumbnails``: small images for the grids.  ``export``: COCO / JSONL zips.  ``users``: accounts.

Templates and static files ship inside the package; nothing is loaded from the internet.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response

from edge.config import StationConfig
from edge.station import http_errors
from edge.station.auth import SessionCodec, SessionGuard, load_or_create_secret
from edge.station.risk_audit import AuditMonitor
from edge.station.static_files import VersionedStaticFiles
from edge.station.store import Store
from edge.station.views import (
    account,
    admin,
    groups,
    live,
    review,
    risk_audit_view,
    stats_view,
    summaries_view,
)
from edge.station.views.common import HERE, Console, CountersFn, class_color, clock, humanize_age, make_templates
from edge.station.views.review import ReviewIn, item_json

__all__ = ["ReviewIn", "class_color", "clock", "create_app", "humanize_age", "item_json", "secret_path"]

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "session.secret"


def secret_path(config: StationConfig | None, storage_dir: Path) -> Path:
    """Where the session secret lives: the configured file, else beside the images in the storage dir."""
    if config is not None and config.session_secret_file is not None:
        return config.session_secret_file
    return storage_dir / SECRET_FILE_NAME


def create_app(store: Store, storage_dir: Path | str, ingest_counters: CountersFn | None = None,
               config: StationConfig | None = None) -> FastAPI:
    """The console app over ``store``; ``ingest_counters`` (if given) feeds /api/stats.

    ``config`` supplies the session secret file, session length, lease length and second-review fraction; without
    it the defaults of StationConfig apply (secret in ``storage_dir``).
    """
    storage_dir = Path(storage_dir)
    cfg = config or StationConfig(storage_dir=storage_dir)
    counters: Counter[str] = Counter()
    codec = SessionCodec(load_or_create_secret(secret_path(config, storage_dir)), cfg.session_hours * 3600)
    console = Console(store=store, storage_dir=storage_dir, templates=make_templates(), codec=codec,
                      lease_minutes=cfg.lease_minutes, counters=counters, ingest_counters=ingest_counters,
                      second_review_fraction=cfg.second_review_fraction)

    app = FastAPI(title="lineside station", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(SessionGuard, store=store, codec=codec, counters=counters)
    http_errors.install(app)  # after the session guard: its id check answers first, before any login
    app.mount("/static", VersionedStaticFiles(directory=HERE / "static"), name="static")
    for group in (account, review, groups, admin, live, stats_view, summaries_view):
        app.include_router(group.router(console))
    monitor = AuditMonitor(store, cfg.audit_alpha, cfg.audit_alpha_by_line)
    app.include_router(risk_audit_view.router(console, monitor))
    console.templates.env.globals["risk_audit"] = monitor.safe_snapshot  # base.html: the banner, for logged-in users

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # pages name /static/favicon.svg; this is for what asks the old way
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            store.ping()
        except Exception as exc:
            log.error("console: health check failed: %s", exc)
            return JSONResponse({"status": "error", "detail": f"database: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.state.console = console
    app.state.risk_audit = monitor  # the station's /metrics reads the same figures (edge.station.server)
    return app
