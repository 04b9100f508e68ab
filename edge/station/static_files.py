"""The console's static files with long-lived caching: each page names them with a version (a hash of the file),
so the browser keeps them and asks again only when they change.

Without it every page load sent one revalidation request per stylesheet and script (six of them), each a round trip
before the page could render: at a keypress per item that is most of the time to the next item.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"


@lru_cache(maxsize=64)
def _version(name: str) -> str:
    path = STATIC_DIR / name
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "0"


def static_url(name: str) -> str:
    """``/static/<name>?v=<hash of its content>``: a new URL whenever the file changes."""
    return f"/static/{name}?v={_version(name)}"


class VersionedStaticFiles(StaticFiles):
    """StaticFiles whose versioned requests (``?v=``) may be cached for a year."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        scope: Scope = args[2] if len(args) > 2 else kwargs["scope"]
        if b"v=" in scope.get("query_string", b""):
            response.headers["Cache-Control"] = IMMUTABLE
        return response
