"""Logging in and out. Both rotate the session (a new CSRF token), so a token seen before login is worthless after."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from edge.station import users
from edge.station.auth import safe_next, set_session_cookie
from edge.station.views.common import Console

log = logging.getLogger(__name__)


def router(console: Console) -> APIRouter:
    api = APIRouter()

    def _secure(request: Request) -> bool:
        return request.url.scheme == "https"

    @api.get("/login")
    def login_page(request: Request, next: str = "/") -> Response:
        if request.state.user is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return console.render(request, "login.html", {"next": safe_next(next), "error": None, "username": ""})

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        target = safe_next(str(form.get("next", "/")))
        user = await run_in_threadpool(users.authenticate, console.store, username, password)
        if user is None:
            console.counters["login_failed"] += 1
            log.warning("console: failed login for %r", username[:100])
            await run_in_threadpool(console.store.audit.record, username[:100] or "?", "login_failed")
            return console.render(request, "login.html", {
                "next": target, "error": "Wrong user name or password, or the user is disabled.",
                "username": username}, status_code=401)
        await run_in_threadpool(console.store.audit.record, user.username, "login", None, None, {"role": user.role})
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(response, console.codec, console.codec.new(user.id), _secure(request))
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        user = request.state.user
        if user is not None:
            await run_in_threadpool(console.store.audit.record, user.username, "logout")
        response = RedirectResponse("/login", status_code=303)
        set_session_cookie(response, console.codec, console.codec.new(), _secure(request))
        return response

    return api
