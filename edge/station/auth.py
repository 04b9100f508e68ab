"""Who is asking: signed session cookies, the login requirement and CSRF, enforced for every route at once.

Why one ASGI middleware rather than a dependency per route: a route added later cannot forget it. Only
``/login``, ``/healthz``, ``/favicon.ico`` and ``/static/`` are open; without a session an API call gets 401 and a
page a redirect to the login page.

The session lives in the cookie itself (JSON, HMAC-SHA256 signed with a secret kept in a 0600 file), so the
station keeps no session table; the user row is looked up on every request, so disabling a user ends their
sessions at once. Every browser gets a session before it logs in (an anonymous one), because the login form
itself carries a CSRF token. The token is per session and rotates at login and logout. A state-changing
request (anything but GET/HEAD/OPTIONS) must echo it, in the ``X-CSRF-Token`` header (fetch) or in the
``csrf_token`` form field (plain forms); otherwise 403, and ``csrf_rejected`` goes up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.station import users
from edge.station.store import Store
from edge.station.users import User

log = logging.getLogger(__name__)

COOKIE = "lineside_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
MAX_FORM_BYTES = 64 * 1024  # forms that carry a CSRF field are tiny; a bigger body must use the header


def load_or_create_secret(path: Path) -> bytes:
    """The session-signing secret: read from ``path``, or made (32 random bytes, hex, mode 0600) on first start."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first; use theirs
            return load_or_create_secret(path)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("station: new session secret written to %s", path)
        text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"session secret {path} is not hex; delete it to have a new one made") from None
    if len(secret) < 16:
        raise ValueError(f"session secret {path} is too short ({len(secret)} bytes, need 16 or more)")
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Session dict <-> cookie value: ``base64(json).base64(hmac)``; expired or forged cookies read as None."""

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        self._secret = secret
        self.max_age_s = max_age_s

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def new(self, user_id: int | None = None, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {"uid": user_id, "csrf": secrets.token_urlsafe(24), "iat": now, "exp": now + self.max_age_s}

    def dumps(self, session: dict[str, Any]) -> str:
        body = _b64(json.dumps(session, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def loads(self, value: str | None, now: float | None = None) -> dict[str, Any] | None:
        if not value or value.count(".") != 1:
            return None
        body, sig = value.split(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            session = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("csrf"), str):
            return None
        if float(session.get("exp", 0)) <= (time.time() if now is None else now):
            return None
        return session


def set_session_cookie(response: Response, codec: SessionCodec, session: dict[str, Any], secure: bool) -> None:
    response.set_cookie(COOKIE, codec.dumps(session), max_age=int(codec.max_age_s), path="/", httponly=True,
                        samesite="lax", secure=secure)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def current_user(request: Request) -> User:
    """The logged-in user (the guard guarantees one on every non-public route)."""
    user = request.state.user
    if user is None:  # only reachable on a public route that forgot it is public
        raise HTTPException(401, "login required")
    assert isinstance(user, User)
    return user


def require_admin(request: Request) -> User:
    """FastAPI dependency for admin-only routes: 403 for reviewers."""
    user = current_user(request)
    if not user.is_admin:
        raise HTTPException(403, f"{user.username} is a reviewer; this needs an admin")
    return user


def csrf_token(request: Request) -> str:
    return str(request.state.session["csrf"])


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class SessionGuard:
    """ASGI middleware: loads the session and user into ``request.state``, then enforces login and CSRF."""

    def __init__(self, app: ASGIApp, store: Store, codec: SessionCodec, counters: Counter[str]) -> None:
        self.app = app
        self.store = store
        self.codec = codec
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        session = self.codec.loads(request.cookies.get(COOKIE))
        user: User | None = None
        if session is not None and session.get("uid") is not None:
            user = await run_in_threadpool(users.get_active, self.store, int(session["uid"]))
            if user is None:
                session = None  # user gone or disabled: the session ends here
        fresh = session is None
        if session is None:
            session = self.codec.new()
        state = scope.setdefault("state", {})
        state["session"], state["user"] = session, user
        secure = scope.get("scheme") == "https"

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # a route that set the cookie itself (login, logout) wins
                if not any(v.startswith(f"{COOKIE}=") for v in headers.getlist("set-cookie")):
                    carrier = Response()
                    set_session_cookie(carrier, self.codec, session, secure)
                    headers.append("set-cookie", carrier.headers["set-cookie"])
            await send(message)

        path, method = scope["path"], scope["method"]
        if user is None and not is_public(path):
            self.counters["unauthenticated"] += 1
            if path.startswith("/api/") or method not in SAFE_METHODS:
                response: Response = JSONResponse({"detail": "login required"}, status_code=401)
            else:
                target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            await response(scope, receive, send_with_cookie)
            return

        if method not in SAFE_METHODS:
            token = request.headers.get(CSRF_HEADER)
            content_type = request.headers.get("content-type", "")
            if token is None and content_type.startswith("application/x-www-form-urlencoded"):
                body = await _read_body(receive, MAX_FORM_BYTES)
                if body is not None:
                    receive = _replay(body)
                    values = parse_qs(body.decode("latin-1")).get(CSRF_FIELD)
                    token = values[0] if values else None
            if not token or fresh or not hmac.compare_digest(token, str(session["csrf"])):
                self.counters["csrf_rejected"] += 1
                log.warning("console: %s %s refused, missing or wrong CSRF token (%s)", method, path,
                            user.username if user else "anonymous")
                await JSONResponse({"detail": "missing or wrong CSRF token; reload the page and try again"},
                                   status_code=403)(scope, receive, send_with_cookie)
                return
        await self.app(scope, receive, send_with_cookie)


def safe_next(target: str | None) -> str:
    """Where to go after login: a local path only (never ``//evil.example`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
