"""Bad requests get a 4xx and one log line, never a 500 with a traceback: app-wide, whatever route a request hits.

- An id no row can have: a path segment that is an integer beyond a 64-bit database integer (2^63 − 1, SQLite's
  and PostgreSQL's bigint) is answered 404 before routing — the route would otherwise hand the database a
  number it cannot bind (SQLite raises OverflowError) and answer 500.
- A number out of the database's range anywhere else (a query parameter, a form field) → 422.
- Every refusal (400-499 from a route, FastAPI's validation 422, the two above) is one log line naming the
  method, the route and why; a burst of the same kind is held to one line per 10 s with a count, so a scanner
  cannot fill the disk with the log.

``install(app)`` adds all of it; the console's routes need not know.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from edge.ops.logs import RateLimitedLog

log = logging.getLogger(__name__)

MAX_DB_INT = 2**63 - 1


def out_of_range(segment: str) -> bool:
    """Whether a path segment is an integer no 64-bit database integer holds (without int() of a huge string)."""
    digits = segment[1:] if segment.startswith(("-", "+")) else segment
    if not digits.isascii() or not digits.isdigit():
        return False
    digits = digits.lstrip("0")
    return len(digits) > 19 or (len(digits) == 19 and int(digits) > MAX_DB_INT)


def _refused(request_or_scope: Request | Scope, status: int, why: str) -> None:
    scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
    route = getattr(scope.get("route"), "path", None) or str(scope.get("path", ""))[:120]
    method = scope.get("method", "")
    refusals = scope["app"].state.refusals if "app" in scope else RateLimitedLog(log)
    refusals.warning(f"{status}:{method}:{route}", "console: %s %s refused with %d: %s", method, route, status,
                      why[:300])


class IdRangeGuard:
    """ASGI middleware: 404 for a path with an integer segment beyond 2^63 − 1 (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(out_of_range(s) for s in scope["path"].split("/")):
            _refused(scope, 404, "an id beyond 2^63 - 1 in the path")
            await JSONResponse({"detail": "no such item"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if 400 <= exc.status_code < 500:
        _refused(request, exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors: Any = exc.errors()
    first = errors[0] if errors else {}
    _refused(request, 422, f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', 'invalid')}")
    return await request_validation_exception_handler(request, exc)


async def _number_out_of_range(request: Request, exc: Exception) -> Response:
    _refused(request, 422, f"a number the database cannot hold ({type(exc).__name__})")
    return JSONResponse({"detail": "a number in the request is out of range"}, status_code=422)


def install(app: FastAPI) -> None:
    """Add the guard and the handlers to ``app`` (the outermost middleware: it answers before the session guard)."""
    app.state.refusals = RateLimitedLog(log)  # per app: one line per kind of refusal and 10 s
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OverflowError, _number_out_of_range)  # SQLite: int too large to bind
    app.add_exception_handler(DataError, _number_out_of_range)  # PostgreSQL: numeric value out of range
    app.add_middleware(IdRangeGuard)
